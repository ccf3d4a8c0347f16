//! `/api/v1/images`: list, show, import from an http(s) URL (a server task the client polls),
//! upload a file (the request body, streamed to disk as it arrives), delete.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_api::images::{UploadQuery, default_name, is_url, url_for_display};
use kiln_api::{DeletedImage, Image, ImageImport, ImportRequest};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AdminState, ApiResult, Failure, now_ms};
use crate::images::{self, ImageError, ImportSpec, ImportTask, Imported, image_resource};
use crate::options::images_dir;

/// How long a whole request body may take: the boot services' 60 s is meant for small
/// bodies, and an image upload is a whole disk (10 GiB at 1 MiB/s is under 3 hours).
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// The admin API's HTTP limits: the boot services', with room for an image upload.
pub(super) fn limits() -> kiln_http::HttpLimits {
    let mut limits = kiln_http::HttpLimits::default();
    limits.body_timeout = UPLOAD_TIMEOUT;
    limits
}

/// The image routes; only the upload takes a body larger than the router's default limit.
pub fn routes() -> OpenApiRouter<Arc<AdminState>> {
    OpenApiRouter::new()
        .routes(routes!(list, import_url))
        .routes(routes!(import_status))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(get_one, upload, delete))
                .layer(DefaultBodyLimit::disable()),
        )
}

impl From<ImageError> for Failure {
    fn from(e: ImageError) -> Failure {
        match e {
            ImageError::Invalid(m) => Failure::invalid(m),
            ImageError::Sha256Mismatch(m) => {
                Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "sha256_mismatch", m)
            }
            ImageError::Exists(m) => Failure::conflict(m),
            ImageError::InUse(m) => Failure::new(StatusCode::CONFLICT, "in_use", m),
            ImageError::NotFound(m) => Failure::not_found(m),
            ImageError::Download(m) => Failure::new(StatusCode::BAD_GATEWAY, "download_failed", m),
            ImageError::Io(m) => {
                tracing::error!("admin API: images: {m}");
                Failure::internal(m)
            }
            ImageError::Store(e) => e.into(),
        }
    }
}

/// Records how an import ended, and answers with it.
fn finish(task: &ImportTask, outcome: Result<Imported, ImageError>) -> ApiResult<ImageImport> {
    match outcome {
        Ok(i) => Ok(task.succeeded(image_resource(&i.record), i.compressed_size)),
        Err(e) => {
            let failure = Failure::from(e);
            task.failed(failure.body.clone());
            Err(failure)
        }
    }
}

/// Every imported image, by name.
#[utoipa::path(get, path = "/api/v1/images", tag = "images", operation_id = "image_list",
    responses((status = 200, description = "Imported images", body = Vec<Image>)))]
pub async fn list(State(s): State<Arc<AdminState>>) -> ApiResult<Json<Vec<Image>>> {
    let all = s.store.run(|store| store.images()).await?;
    Ok(Json(all.iter().map(image_resource).collect()))
}

/// One image.
#[utoipa::path(get, path = "/api/v1/images/{name}", tag = "images", operation_id = "image_get",
    params(("name" = String, Path, description = "image name")),
    responses((status = 200, body = Image), (status = 404, body = kiln_api::ApiErrorBody)))]
pub async fn get_one(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Image>> {
    let found = s
        .store
        .run(move |store| {
            store
                .image(&name)?
                .map(|rec| Json(image_resource(&rec)))
                .ok_or_else(|| ImageError::NotFound(format!("no image named {name:?} is imported")))
        })
        .await?;
    Ok(found)
}

/// Starts downloading an http(s) URL on the server and importing it; answers 202 with the
/// import, whose progress and outcome `GET /api/v1/images/imports/{id}` reports. The name,
/// the digest's form and whether the name is free are checked first (422, 409).
#[utoipa::path(post, path = "/api/v1/images", tag = "images", operation_id = "image_import_url",
    request_body = ImportRequest,
    responses((status = 202, description = "Import started", body = ImageImport),
        (status = 409, description = "The name is taken", body = kiln_api::ApiErrorBody),
        (status = 422, description = "Not an http(s) URL, a bad name, level or sha256", body = kiln_api::ApiErrorBody)))]
pub async fn import_url(
    State(s): State<Arc<AdminState>>,
    Json(req): Json<ImportRequest>,
) -> ApiResult<(
    StatusCode,
    [(header::HeaderName, String); 1],
    Json<ImageImport>,
)> {
    let shown = url_for_display(&req.url);
    if !is_url(&req.url) {
        return Err(Failure::invalid(format!(
            "url {shown:?}: only http:// and https:// URLs are downloaded; upload a local file \
             instead (PUT /api/v1/images/NAME, as `kiln image import FILE` does)"
        )));
    }
    let defaulted = req.name.is_none();
    let name = req.name.unwrap_or_else(|| default_name(&req.url));
    let spec = ImportSpec::new(
        &name,
        req.replace,
        req.zstd_level,
        &shown,
        req.sha256.as_deref(),
    )
    .map_err(|e| match e {
        ImageError::Invalid(m) if defaulted => {
            ImageError::Invalid(format!("{m} (give one with --name)"))
        }
        e => e,
    })?;
    let checked = spec.clone();
    s.store.run(move |store| checked.check_free(store)).await?;
    let task = s.imports.begin(&spec.name, &shown, now_ms());
    // The task holds the store and the data dir, not the admin state: when the admin API
    // stops, the state and its import registry go, and the registry stops the download.
    let (store, data_dir, running) = (s.store.shared(), s.data_dir.clone(), task.clone());
    let url = req.url;
    tokio::task::spawn_blocking(move || {
        let outcome = images::import_url(&data_dir, &*store, &url, &spec, &running);
        if let Err(e) = finish(&running, outcome) {
            tracing::warn!("image import from {}: {}", spec.label, e.body.message);
        }
    });
    let started = task.snapshot();
    let location = kiln_api::routes::path("images/imports", Some(&started.id), "");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(started),
    ))
}

/// An import's progress (bytes received of how many) and, once ended, its image or error.
#[utoipa::path(get, path = "/api/v1/images/imports/{id}", tag = "images",
    operation_id = "image_import_status",
    params(("id" = String, Path, description = "the import's id, from its start")),
    responses((status = 200, body = ImageImport), (status = 404, body = kiln_api::ApiErrorBody)))]
pub async fn import_status(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ImageImport>> {
    s.imports.get(&id).map(Json).ok_or_else(|| {
        Failure::not_found(format!(
            "no import {id:?} (imports are forgotten when the server restarts)"
        ))
    })
}

/// Imports the request body (a disk image: raw or qcow2, as it is or compressed) as `name`.
/// The body is written to the images directory as it arrives, never held in memory; the
/// answer comes once it is converted.
#[utoipa::path(put, path = "/api/v1/images/{name}", tag = "images", operation_id = "image_upload",
    params(("name" = String, Path, description = "image name"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "the image file as it is"),
    responses((status = 200, description = "Imported", body = ImageImport),
        (status = 204, description = "dry_run: the upload would be accepted"),
        (status = 400, description = "The upload broke off", body = kiln_api::ApiErrorBody),
        (status = 409, description = "The name is taken", body = kiln_api::ApiErrorBody),
        (status = 422, description = "A bad name, level, sha256 or image", body = kiln_api::ApiErrorBody)))]
pub async fn upload(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let label = q
        .source
        .clone()
        .unwrap_or_else(|| format!("upload of {name}"));
    let spec = ImportSpec::new(&name, q.replace, q.zstd_level, &label, q.sha256.as_deref())?;
    let checked = spec.clone();
    s.store.run(move |store| checked.check_free(store)).await?;
    if q.dry_run {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let total = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let task = s.imports.begin(&name, &label, now_ms());
    task.received(0, total);
    let received = receive(&s, &label, body, &task).await;
    let outcome = match received {
        Ok((staged, sha256)) => {
            let (state, running) = (s.clone(), task.clone());
            s.store
                .clone()
                .run(move |store| {
                    spec.check_digest(&sha256)?;
                    running.converting();
                    images::import_file(&state.data_dir, store, staged.path(), &spec)
                })
                .await
                .map_err(Failure::from)
        }
        Err(f) => Err(f),
    };
    match outcome {
        Ok(imported) => Ok(Json(finish(&task, Ok(imported))?).into_response()),
        Err(failure) => {
            task.failed(failure.body.clone());
            Err(failure)
        }
    }
}

/// Writes the body to a temporary file in the images directory, hashing it as it arrives.
async fn receive(
    s: &AdminState,
    label: &str,
    body: Body,
    task: &ImportTask,
) -> ApiResult<(tempfile::NamedTempFile, String)> {
    let dir = images_dir(&s.data_dir);
    let io = |what: String| {
        move |e: std::io::Error| Failure::from(ImageError::Io(format!("{what}: {e}")))
    };
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(io(format!("creating {}", dir.display())))?;
    let staged = tempfile::Builder::new()
        .prefix(".upload-")
        .tempfile_in(&dir)
        .map_err(io(format!("a temporary file in {}", dir.display())))?;
    let path = staged.path().display().to_string();
    let mut file =
        tokio::fs::File::from_std(staged.as_file().try_clone().map_err(io(path.clone()))?);
    let mut body = std::pin::pin!(body);
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "upload_broken",
                format!("{label}: the upload broke off after {bytes} bytes: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        hash.update(&data);
        file.write_all(&data)
            .await
            .map_err(io(format!("writing {path}")))?;
        bytes += data.len() as u64;
        task.received(bytes, None);
    }
    file.flush().await.map_err(io(format!("writing {path}")))?;
    file.sync_all()
        .await
        .map_err(io(format!("writing {path}")))?;
    Ok((staged, crate::images::format::hex(&hash.finalize())))
}

/// Forgets an image and removes its file, unless another image record names the same file.
/// Refused (409) while an unfinished workflow streams that file.
#[utoipa::path(delete, path = "/api/v1/images/{name}", tag = "images", operation_id = "image_delete",
    params(("name" = String, Path, description = "image name")),
    responses((status = 200, body = DeletedImage), (status = 404, body = kiln_api::ApiErrorBody),
        (status = 409, description = "An unfinished workflow uses it", body = kiln_api::ApiErrorBody)))]
pub async fn delete(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<DeletedImage>> {
    let state = s.clone();
    let (rec, file_removed) = s
        .store
        .run(move |store| images::delete(&state.data_dir, store, &name))
        .await?;
    Ok(Json(DeletedImage {
        image: image_resource(&rec),
        file_removed,
    }))
}

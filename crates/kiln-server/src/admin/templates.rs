//! `/api/v1/templates`: the templates shipped with Kiln, and validation of one's YAML.

use axum::Json;
use kiln_api::{TemplateCheck, TemplateInfo, ValidateTemplate};

/// The workflow templates shipped with Kiln (the repository's `workflows/`).
#[utoipa::path(get, path = "/api/v1/templates", tag = "templates", operation_id = "template_list",
    responses((status = 200, body = Vec<TemplateInfo>)))]
pub async fn list() -> Json<Vec<TemplateInfo>> {
    Json(crate::templates::shipped())
}

/// Checks a template's YAML without storing anything: its outline, or every problem
/// located `file:line`. A POST because the YAML is the body; it changes nothing.
#[utoipa::path(post, path = "/api/v1/templates/validate", tag = "templates", operation_id = "template_validate",
    request_body = ValidateTemplate,
    responses((status = 200, body = TemplateCheck)))]
pub async fn validate(Json(req): Json<ValidateTemplate>) -> Json<TemplateCheck> {
    Json(crate::templates::check(&req.file_name, &req.template))
}

//! The OS image an install would write, resolved as the server resolves it: an imported image
//! (its file present, size and sha256 known) or an http(s) URL with its digest (answering).

use std::path::Path;
use std::time::Duration;

use kiln_api::CheckStatus;
use kiln_store::ImageRecord;

use crate::clusters::{ImageRef, image_ref};

/// Bound on asking an image URL's server.
const URL_TIMEOUT: Duration = Duration::from_secs(5);

/// The names a workflow template uses as `images["NAME"]`, each with its 1-based line.
pub fn template_images(text: &str) -> Vec<(String, usize)> {
    let mut found: Vec<(String, usize)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("images[") {
            rest = &rest[at + "images[".len()..];
            let quoted = rest.trim_start();
            let Some(q) = quoted.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                continue;
            };
            if let Some(end) = quoted[1..].find(q) {
                let name = quoted[1..1 + end].to_string();
                if !found.iter().any(|(f, _)| *f == name) {
                    found.push((name, n + 1));
                }
            }
        }
    }
    found
}

/// An imported image's record and its file under `images_dir`.
pub fn imported(name: &str, images: &[ImageRecord], images_dir: &Path) -> (CheckStatus, String) {
    let Some(img) = images.iter().find(|i| i.name == name) else {
        let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        let known = if names.is_empty() {
            "none imported yet".to_string()
        } else {
            format!("imported: {}", names.join(", "))
        };
        return (
            CheckStatus::Fail,
            format!(
                "image {name:?} is not imported ({known}); `kiln image import FILE --name {name}`"
            ),
        );
    };
    match std::fs::metadata(images_dir.join(&img.file)) {
        Ok(m) if m.is_file() => (
            CheckStatus::Ok,
            format!(
                "{name}: {} ({} bytes served, {} bytes raw), sha256 {}",
                img.file,
                m.len(),
                img.raw_size,
                img.sha256
            ),
        ),
        _ => (
            CheckStatus::Fail,
            format!(
                "image {name:?}: its file {} is missing from {}",
                img.file,
                images_dir.display()
            ),
        ),
    }
}

/// A URL image: the server answers a HEAD with 2xx (its size when it says).
fn url_answers(url: &str, sha256: &str) -> (CheckStatus, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(URL_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.head(url).call() {
        Ok(r) if r.status().is_success() => {
            let size = r
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .map(|s| format!("{s} bytes"))
                .unwrap_or_else(|| "size not given".into());
            (CheckStatus::Ok, format!("{url}: {size}, sha256 {sha256}"))
        }
        Ok(r) => (
            CheckStatus::Fail,
            format!("{url}: HTTP {} to a HEAD request", r.status()),
        ),
        Err(e) => (CheckStatus::Fail, format!("{url}: {e}")),
    }
}

/// One image as named in a request, spec or template.
pub fn check(named: &str, images: &[ImageRecord], images_dir: &Path) -> (CheckStatus, String) {
    let names: Vec<String> = images.iter().map(|i| i.name.clone()).collect();
    match image_ref(Some(named), &names) {
        Ok(ImageRef::Imported(name)) => imported(&name, images, images_dir),
        Ok(ImageRef::Url { url, sha256 }) => url_answers(&url, &sha256),
        Err(why) => (CheckStatus::Fail, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_image_names_with_their_lines() {
        let t = "name: t\nactions:\n  - with:\n      url: '{{ images[\"test-os\"].url }}'\n      sha256: '{{ images[\"test-os\"].sha256 }}'\n      other: \"{{ images['b'].url }}\"\n";
        assert_eq!(
            template_images(t),
            [("test-os".to_string(), 4), ("b".to_string(), 6)]
        );
        assert!(template_images("images[ x ]").is_empty());
    }

    #[test]
    fn imported_images_need_their_record_and_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let rec = ImageRecord {
            name: "test-os".into(),
            file: "test-os-0123.raw.zst".into(),
            raw_size: 100,
            sha256: "ab".repeat(32),
            created_ms: 0,
            source_format: "raw".into(),
        };
        let (s, d) = check("no-such", std::slice::from_ref(&rec), dir.path());
        assert_eq!(s, CheckStatus::Fail);
        assert!(d.contains("not an imported image (test-os)"), "{d}");
        let (s, d) = imported("no-such", std::slice::from_ref(&rec), dir.path());
        assert_eq!(s, CheckStatus::Fail);
        assert!(d.contains("imported: test-os"), "{d}");
        let (s, d) = check("test-os", std::slice::from_ref(&rec), dir.path());
        assert_eq!(s, CheckStatus::Fail);
        assert!(d.contains("is missing"), "{d}");
        std::fs::write(dir.path().join(&rec.file), b"zstd").unwrap();
        let (s, d) = check("test-os", &[rec], dir.path());
        assert_eq!(s, CheckStatus::Ok, "{d}");
        assert!(d.contains("4 bytes served, 100 bytes raw"), "{d}");
    }

    #[test]
    fn a_url_that_does_not_answer_fails() {
        // Port 9 on loopback: nothing listens (discard is never enabled here).
        let (s, d) = check(
            "http://127.0.0.1:9/os.raw.gz#sha256=abcd",
            &[],
            Path::new("/"),
        );
        assert_eq!(s, CheckStatus::Fail);
        assert!(d.starts_with("http://127.0.0.1:9/os.raw.gz:"), "{d}");
    }
}

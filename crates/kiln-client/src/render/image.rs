//! Imported images.

use kiln_api::{DeletedImage, Image, ImageImport};

use super::table;

pub fn list(imgs: &[Image]) -> String {
    let rows: Vec<Vec<String>> = imgs
        .iter()
        .map(|i| {
            let source = if i.source_format.is_empty() {
                "-".into()
            } else {
                i.source_format.clone()
            };
            vec![
                i.name.clone(),
                i.url_path.clone(),
                source,
                i.raw_size.to_string(),
                i.sha256.clone(),
                i.created.clone(),
            ]
        })
        .collect();
    let header = [
        "NAME", "URL PATH", "SOURCE", "RAW SIZE", "SHA256", "IMPORTED",
    ];
    table(&header, &rows)
}

/// `NAME: SOURCE (FORMAT) -> RAW raw -> COMPRESSED compressed`, after an import.
pub fn imported(image: &Image, source: &str, ended: &ImageImport) -> String {
    let compressed = ended
        .compressed_size
        .map_or_else(|| "?".to_string(), |n| n.to_string());
    format!(
        "{}: {source} ({}) -> {} raw -> {compressed} compressed",
        image.name, image.source_format, image.raw_size
    )
}

pub fn deleted(gone: &DeletedImage) -> String {
    let file = if gone.file_removed {
        "removed"
    } else {
        "kept: another image names it"
    };
    format!(
        "deleted image {} (file {} {file})\n",
        gone.image.name, gone.image.file
    )
}

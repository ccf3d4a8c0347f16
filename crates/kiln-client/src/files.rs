//! Files the CLI writes for the operator.

use std::io::Write;
use std::path::Path;

use crate::ClientError;

/// Writes `text` to `path` with mode 0600, atomically: a temporary file (0600 from the start)
/// in the same directory, synced, then renamed over `path`. For what holds a secret (a
/// kubeconfig's client key).
pub fn write_private(path: &Path, text: &str) -> Result<(), ClientError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let failed = |what: &Path, e: std::io::Error| {
        ClientError::Input(format!("writing {}: {e}", what.display()))
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-private-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| failed(dir, e))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| failed(path, e))?;
    tmp.persist(path).map_err(|e| failed(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_is_0600_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kubeconfig");
        std::fs::write(&p, "old and longer").unwrap();
        write_private(&p, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}

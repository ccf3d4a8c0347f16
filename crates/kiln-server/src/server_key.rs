//! The server's phone-home key (`DATA_DIR/server.key`): 32 random bytes made at first start,
//! 0600, kept across restarts so URLs already in seeds stay valid.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{ServerError, StartContext};
use kiln_engine::credential::PhoneHomeKey;

pub const FILE: &str = "server.key";

pub fn load_or_create(data_dir: &Path) -> Result<PhoneHomeKey, ServerError> {
    let path = data_dir.join(FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let Ok(bytes) = <[u8; 32]>::try_from(bytes.as_slice()) else {
                return Err(ServerError::Invalid(format!(
                    "{}: {} bytes, not a 32-byte key (remove it to make a new one: phone-home URLs already handed out stop working)",
                    path.display(),
                    bytes.len()
                )));
            };
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .with_start(|| format!("making {} 0600", path.display()))?;
            Ok(PhoneHomeKey::from_bytes(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = PhoneHomeKey::generate();
            // Written whole under another name, then renamed: a crash never leaves half a key.
            let tmp = data_dir.join(format!("{FILE}.tmp"));
            let _ = fs::remove_file(&tmp);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_start(|| format!("creating {}", tmp.display()))?;
            f.write_all(key.bytes())
                .and_then(|()| f.sync_all())
                .with_start(|| format!("writing {}", tmp.display()))?;
            fs::rename(&tmp, &path).with_start(|| format!("writing {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_start(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_0600_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.sign("w"), b.sign("w"));
        fs::write(dir.path().join(FILE), b"short").unwrap();
        let e = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a 32-byte key"), "{e}");
    }
}

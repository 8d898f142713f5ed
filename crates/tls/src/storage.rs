//! On-disk layout of ACME state, written atomically (temporary file, fsync, rename) so a
//! crash or a full disk never leaves half a file:
//!
//! ```text
//! <storage>/accounts/<directory host and path>.json   account credentials, mode 0600
//! <storage>/<name>/fullchain.pem                       certificate chain
//! <storage>/<name>/privkey.pem                         private key, mode 0600
//! <storage>/<name>/status.json                         next renewal, last error (for `gateway certs`)
//! ```

use crate::pem::{self, Loaded};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub names: Vec<String>,
    pub next_renewal: Option<String>,
    pub last_error: Option<String>,
    pub directory: Option<String>,
}

pub fn cert_dir(storage: &Path, name: &str) -> PathBuf {
    storage.join(name)
}

/// A file name for an account: the directory URL without its scheme, made path-safe.
pub fn account_path(storage: &Path, directory: &str) -> PathBuf {
    let key: String = directory
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    storage.join("accounts").join(format!("{key}.json"))
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself must survive a crash.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Stores a certificate and its key. The key goes first: a reader that sees the new chain
/// always finds the matching key (and a failed key write leaves both old files in place).
pub fn save(storage: &Path, name: &str, chain: &[u8], key: &[u8]) -> std::io::Result<()> {
    let dir = cert_dir(storage, name);
    let old_key = std::fs::read(dir.join("privkey.pem")).ok();
    write_atomic(&dir.join("privkey.pem"), key, 0o600)?;
    if let Err(e) = write_atomic(&dir.join("fullchain.pem"), chain, 0o644) {
        // Put the old key back so the old pair stays consistent.
        if let Some(k) = old_key {
            let _ = write_atomic(&dir.join("privkey.pem"), &k, 0o600);
        }
        return Err(e);
    }
    Ok(())
}

pub fn load(storage: &Path, name: &str) -> Option<Loaded> {
    let dir = cert_dir(storage, name);
    pem::load_files(&dir.join("fullchain.pem"), &dir.join("privkey.pem")).ok()
}

pub fn read_status(storage: &Path, name: &str) -> Option<Status> {
    let b = std::fs::read(cert_dir(storage, name).join("status.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

pub fn write_status(storage: &Path, name: &str, st: &Status) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(st).map_err(std::io::Error::other)?;
    write_atomic(&cert_dir(storage, name).join("status.json"), &json, 0o644)
}

pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_writes_and_modes() {
        let d = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        save(
            d.path(),
            "main",
            c.cert.pem().as_bytes(),
            c.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let mode = std::fs::metadata(d.path().join("main/privkey.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(load(d.path(), "main").unwrap().covers("a.test"));
        let leftovers: Vec<_> = std::fs::read_dir(d.path().join("main"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn an_unwritable_directory_leaves_the_old_files_intact() {
        let d = tempfile::tempdir().unwrap();
        let old = rcgen::generate_simple_self_signed(vec!["old.test".to_string()]).unwrap();
        save(
            d.path(),
            "main",
            old.cert.pem().as_bytes(),
            old.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let dir = d.path().join("main");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let new = rcgen::generate_simple_self_signed(vec!["new.test".to_string()]).unwrap();
        let r = save(
            d.path(),
            "main",
            new.cert.pem().as_bytes(),
            new.signing_key.serialize_pem().as_bytes(),
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Root ignores directory permissions; the check only means something for other users.
        if r.is_err() {
            assert!(load(d.path(), "main").unwrap().covers("old.test"));
        }
    }

    #[test]
    fn account_file_names_are_path_safe() {
        let p = account_path(Path::new("/c"), "https://acme-v02.api.letsencrypt.org/directory");
        assert_eq!(
            p,
            Path::new("/c/accounts/acme-v02.api.letsencrypt.org_directory.json")
        );
    }
}

//! On-disk layout of ACME state. A certificate and its key are stored as one unit: a
//! version directory written in full, then made current by one atomic rename of a symlink,
//! so no crash, full disk or concurrent reader ever pairs a key with another certificate:
//!
//! ```text
//! <storage>/accounts/<directory host and path>.json      account credentials, mode 0600
//! <storage>/accounts/<directory host and path>.contact   the contact the account was given
//! <storage>/<name>/v-<unix time in ns>-<random>/          one issuance: fullchain.pem, privkey.pem (0600)
//! <storage>/<name>/current -> v-...                       the unit in use (symlink, swapped by rename)
//! <storage>/<name>/fullchain.pem -> current/fullchain.pem the paths users and other programs read
//! <storage>/<name>/privkey.pem -> current/privkey.pem
//! <storage>/<name>/status.json                            next renewal, last error, issuing directory
//! <storage>/<name>/.lock                                  flock held while ordering (one orderer at a time)
//! ```
//!
//! The current and the previous unit are kept; at load, a pair whose key does not fit its
//! chain is refused and the previous good pair is used. Files from older versions
//! (`fullchain.pem` and `privkey.pem` as plain files) are read as they are and replaced by
//! the links at the next issuance. Small files (status, accounts) are written atomically
//! (temporary file, fsync, rename).

use crate::pem::{self, Loaded};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const CHAIN: &str = "fullchain.pem";
const KEY: &str = "privkey.pem";
const CURRENT: &str = "current";
const VERSION_PREFIX: &str = "v-";
const STAGING_PREFIX: &str = ".new-";

/// Test-only: `GATEWAY_TEST_CRASH_AFTER=privkey`, `fullchain` or `current` aborts the process
/// at that step of [`save`] (after the key, after the chain, after the swap), so the
/// integration tests can check that a crash never leaves a torn pair. Never set it in
/// production: the process dies on its next issuance.
pub const CRASH_ENV: &str = "GATEWAY_TEST_CRASH_AFTER";

fn crash_point(step: &str) {
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == step) {
        eprintln!("{CRASH_ENV}={step}: aborting on purpose (test hook)");
        std::process::abort();
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub names: Vec<String>,
    pub next_renewal: Option<String>,
    /// The last failure with its whole chain of causes; `None` after a success.
    pub last_error: Option<String>,
    /// The directory the certificate's loop orders from now.
    pub directory: Option<String>,
    /// The directory that issued the stored certificate (ARI's `replaces` is only sent back
    /// to it).
    pub issued_by: Option<String>,
    /// dns-01: when the TXT records of the last order were visible on every authoritative
    /// server, and how long that took (`2026-12-07T12:00:00Z after 3.2s`).
    pub last_propagation: Option<String>,
}

pub fn cert_dir(storage: &Path, name: &str) -> PathBuf {
    storage.join(name)
}

fn account_key(directory: &str) -> String {
    directory
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
        .collect()
}

/// A file name for an account: the directory URL without its scheme, made path-safe.
pub fn account_path(storage: &Path, directory: &str) -> PathBuf {
    storage
        .join("accounts")
        .join(format!("{}.json", account_key(directory)))
}

/// Where the contact last given to the account for `directory` is recorded.
pub fn contact_path(storage: &Path, directory: &str) -> PathBuf {
    storage
        .join("accounts")
        .join(format!("{}.contact", account_key(directory)))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
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
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new file with `bytes`, flushed to disk.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Points `dir/link` at `target` by renaming a new symlink over it (atomic: a reader sees
/// the old target or the new one). Nothing is written when it already points there.
fn set_link(dir: &Path, link: &str, target: &Path) -> std::io::Result<()> {
    let path = dir.join(link);
    if std::fs::read_link(&path).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let tmp = dir.join(format!(".{link}.tmp-{}", std::process::id()));
    // A leftover of a crash; a directory in its place makes the symlink fail below.
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    if let Err(e) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// The version directory `current` points at, if any.
fn current_version(dir: &Path) -> Option<String> {
    std::fs::read_link(dir.join(CURRENT))
        .ok()
        .and_then(|t| t.to_str().map(str::to_owned))
}

/// Version directories of a certificate, newest first.
fn versions(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with(VERSION_PREFIX))
        .collect();
    v.sort_unstable();
    v.reverse();
    v
}

/// Stores a certificate and its key as one unit (see the module comment): both files go
/// into a staging directory, which becomes a version directory by one rename once complete,
/// then `current` is swapped to it. A failure at any step leaves the previous unit in use
/// and the user-facing paths untouched.
pub fn save(storage: &Path, name: &str, chain: &[u8], key: &[u8]) -> std::io::Result<()> {
    let dir = cert_dir(storage, name);
    std::fs::create_dir_all(&dir)?;
    // Names sort by time (newest last), the random part keeps two writers apart.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tag = format!("{nanos:020}-{:08x}", rand::random::<u32>());
    let staging = dir.join(format!("{STAGING_PREFIX}{tag}"));
    let version = format!("{VERSION_PREFIX}{tag}");
    let result = (|| {
        std::fs::create_dir(&staging)?;
        write_new(&staging.join(KEY), key, 0o600)?;
        crash_point("privkey");
        write_new(&staging.join(CHAIN), chain, 0o644)?;
        sync_dir(&staging)?;
        crash_point("fullchain");
        std::fs::rename(&staging, dir.join(&version))?;
        set_link(&dir, CURRENT, Path::new(&version))?;
        sync_dir(&dir)?;
        crash_point("current");
        // The paths users read go through `current`: made once (a plain file left by an
        // older version is replaced; until then it still holds the previous, matching pair).
        for f in [KEY, CHAIN] {
            set_link(&dir, f, &Path::new(CURRENT).join(f))?;
        }
        sync_dir(&dir)
    })();
    match &result {
        Ok(()) => prune(&dir),
        Err(_) => {
            let _ = std::fs::remove_dir_all(&staging);
            if current_version(&dir).as_deref() != Some(version.as_str()) {
                let _ = std::fs::remove_dir_all(dir.join(&version));
            }
        }
    }
    result
}

/// Keeps the current unit and the newest other one (the previous good pair); removes older
/// units and staging directories left by a crash. Called with the lock held.
fn prune(dir: &Path) {
    let current = current_version(dir);
    let mut kept_previous = false;
    for v in versions(dir) {
        if Some(&v) == current.as_ref() {
            continue;
        }
        if !kept_previous {
            kept_previous = true;
            continue;
        }
        let _ = std::fs::remove_dir_all(dir.join(v));
    }
    for e in std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(STAGING_PREFIX))
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// What [`load_unit`] found.
#[derive(Debug, Default)]
pub struct Stored {
    /// The pair to serve: the current unit, else the plain files, else the newest earlier
    /// unit that loads.
    pub loaded: Option<Loaded>,
    /// The directory it came from.
    pub from: Option<PathBuf>,
    /// Pairs refused on the way, each with its reason (a key that does not fit its chain,
    /// an unreadable file).
    pub refused: Vec<String>,
}

/// Loads the stored pair of `name`, refusing any pair whose key does not fit its chain and
/// falling back to the previous good one.
pub fn load_unit(storage: &Path, name: &str) -> Stored {
    let dir = cert_dir(storage, name);
    let mut candidates = vec![dir.join(CURRENT), dir.clone()];
    candidates.extend(versions(&dir).into_iter().map(|v| dir.join(v)));
    let mut stored = Stored::default();
    let mut tried: Vec<(Option<PathBuf>, Option<PathBuf>)> = Vec::new();
    for cand in candidates {
        let (chain, key) = (cand.join(CHAIN), cand.join(KEY));
        if !chain.exists() && !key.exists() {
            continue;
        }
        // `fullchain.pem` is usually a link into `current`: load each pair once.
        let real = (chain.canonicalize().ok(), key.canonicalize().ok());
        if tried.contains(&real) {
            continue;
        }
        tried.push(real);
        match pem::load_files(&chain, &key) {
            Ok(loaded) => {
                stored.loaded = Some(loaded);
                stored.from = Some(cand);
                return stored;
            }
            Err(e) => stored.refused.push(crate::error_chain(&e)),
        }
    }
    stored
}

/// The stored pair of `name`, if one loads (see [`load_unit`]).
pub fn load(storage: &Path, name: &str) -> Option<Loaded> {
    load_unit(storage, name).loaded
}

/// Points `fullchain.pem` and `privkey.pem` through `current` when they do not yet (a crash
/// after the swap, or plain files from an older version). Called when the current unit is
/// what loaded.
pub fn link_current(storage: &Path, name: &str) -> std::io::Result<()> {
    let dir = cert_dir(storage, name);
    for f in [KEY, CHAIN] {
        set_link(&dir, f, &Path::new(CURRENT).join(f))?;
    }
    sync_dir(&dir)
}

/// True when `from` (a [`Stored::from`]) is the current unit.
pub fn is_current(storage: &Path, name: &str, from: &Path) -> bool {
    from == cert_dir(storage, name).join(CURRENT)
}

/// An exclusive `flock(2)` on `<storage>/<name>/.lock`: one process (and one loop) orders a
/// certificate at a time. Released on drop, and by the kernel if the process dies.
#[derive(Debug)]
pub struct StorageLock {
    _flock: nix::fcntl::Flock<std::fs::File>,
}

/// Takes the lock of `name` if it is free: `Ok(None)` while someone else holds it.
pub fn try_lock(storage: &Path, name: &str) -> std::io::Result<Option<StorageLock>> {
    let dir = cert_dir(storage, name);
    std::fs::create_dir_all(&dir)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(".lock"))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(flock) => Ok(Some(StorageLock { _flock: flock })),
        Err((_, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => Ok(None),
        Err((_, errno)) => Err(std::io::Error::from(errno)),
    }
}

/// Whether the storage of `name` looks writable, without writing anything: `storage` (and
/// the certificate's directory once it exists) must be directories this process may write
/// and search (access(2): permissions, a read-only mount). A storage not created yet passes
/// (it is created at the first write). Root passes the permission check, not a read-only
/// file system nor a file where the directory should be.
pub fn check_writable(storage: &Path, name: &str) -> std::io::Result<()> {
    use nix::unistd::{access, AccessFlags};
    let dir = cert_dir(storage, name);
    for d in [storage, dir.as_path()] {
        match std::fs::metadata(d) {
            Ok(m) if !m.is_dir() => return Err(std::io::Error::from(nix::errno::Errno::ENOTDIR)),
            Ok(_) => access(d, AccessFlags::W_OK | AccessFlags::X_OK).map_err(std::io::Error::from)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn read_status(storage: &Path, name: &str) -> Option<Status> {
    let b = std::fs::read(cert_dir(storage, name).join("status.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

pub fn write_status(storage: &Path, name: &str, st: &Status) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(st).map_err(std::io::Error::other)?;
    write_atomic(&cert_dir(storage, name).join("status.json"), &json, 0o644)
}

/// Where an HTTP-01 key authorization is shared with the other instances:
/// `<storage>/.challenges/<token>` (`token` is base64url: callers check it).
pub fn challenge_path(storage: &Path, token: &str) -> PathBuf {
    storage.join(".challenges").join(token)
}

/// Writes the answer to `token` for every instance sharing `storage` (see [`challenge_path`]).
pub fn write_challenge(storage: &Path, token: &str, key_authorization: &str) -> std::io::Result<()> {
    write_atomic(
        &challenge_path(storage, token),
        key_authorization.as_bytes(),
        0o644,
    )
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

    fn pair(host: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn save_pair(storage: &Path, host: &str) -> (String, String) {
        let (chain, key) = pair(host);
        save(storage, "main", chain.as_bytes(), key.as_bytes()).unwrap();
        (chain, key)
    }

    #[test]
    fn a_unit_is_stored_behind_links_with_private_keys() {
        let d = tempfile::tempdir().unwrap();
        let (chain, key) = save_pair(d.path(), "a.test");
        let dir = d.path().join("main");
        let mode = std::fs::metadata(dir.join("privkey.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The user-facing paths read the unit through `current`.
        assert_eq!(std::fs::read_to_string(dir.join("fullchain.pem")).unwrap(), chain);
        assert_eq!(std::fs::read_to_string(dir.join("privkey.pem")).unwrap(), key);
        assert_eq!(
            std::fs::read_link(dir.join("fullchain.pem")).unwrap(),
            Path::new("current/fullchain.pem")
        );
        let stored = load_unit(d.path(), "main");
        assert!(stored.loaded.unwrap().covers("a.test"));
        assert!(is_current(d.path(), "main", &stored.from.unwrap()));
        assert!(stored.refused.is_empty());
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-") || n.starts_with(STAGING_PREFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn the_current_and_the_previous_unit_are_kept() {
        let d = tempfile::tempdir().unwrap();
        for host in ["one.test", "two.test", "three.test"] {
            save_pair(d.path(), host);
        }
        let dir = d.path().join("main");
        assert_eq!(versions(&dir).len(), 2, "{:?}", versions(&dir));
        assert!(load(d.path(), "main").unwrap().covers("three.test"));
    }

    #[test]
    fn plain_files_from_an_older_version_are_read_then_replaced_by_links() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("main");
        std::fs::create_dir_all(&dir).unwrap();
        let (chain, key) = pair("old.test");
        std::fs::write(dir.join("fullchain.pem"), chain).unwrap();
        std::fs::write(dir.join("privkey.pem"), key).unwrap();
        assert!(load(d.path(), "main").unwrap().covers("old.test"));
        save_pair(d.path(), "new.test");
        assert!(std::fs::symlink_metadata(dir.join("privkey.pem"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(load(d.path(), "main").unwrap().covers("new.test"));
    }

    #[test]
    fn a_key_that_does_not_fit_is_refused_and_the_previous_pair_used() {
        let d = tempfile::tempdir().unwrap();
        save_pair(d.path(), "good.test");
        save_pair(d.path(), "torn.test");
        // Tear the current unit: another key under its chain.
        let (_, stranger) = pair("stranger.test");
        let current = d.path().join("main/current");
        std::fs::remove_file(current.join("privkey.pem")).unwrap();
        std::fs::write(current.join("privkey.pem"), stranger).unwrap();
        let stored = load_unit(d.path(), "main");
        assert!(stored.loaded.unwrap().covers("good.test"));
        assert_eq!(stored.refused.len(), 1, "{:?}", stored.refused);
        assert!(stored.refused[0].contains("does not fit"), "{:?}", stored.refused);
        assert!(!is_current(d.path(), "main", &stored.from.unwrap()));
    }

    #[test]
    fn a_failed_save_leaves_the_old_unit_in_use_and_no_debris() {
        let d = tempfile::tempdir().unwrap();
        save_pair(d.path(), "old.test");
        let dir = d.path().join("main");
        let before: Vec<String> = versions(&dir);
        // The temporary link's name is taken by a directory: the swap fails, whoever runs
        // the test (root ignores permissions, not this).
        std::fs::create_dir_all(dir.join(format!(".current.tmp-{}/blocker", std::process::id()))).unwrap();
        let (chain, key) = pair("new.test");
        let r = save(d.path(), "main", chain.as_bytes(), key.as_bytes());
        assert!(r.is_err(), "the save must fail");
        assert!(load(d.path(), "main").unwrap().covers("old.test"));
        assert_eq!(versions(&dir), before, "the failed unit is removed");
        assert!(!std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with(STAGING_PREFIX)));
    }

    #[test]
    fn storage_under_a_regular_file_fails_for_every_user() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("file"), "not a directory").unwrap();
        let (chain, key) = pair("a.test");
        let err = save(
            &d.path().join("file/sub"),
            "main",
            chain.as_bytes(),
            key.as_bytes(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotADirectory, "{err}");
        let err = write_status(&d.path().join("file/sub"), "main", &Status::default()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotADirectory, "{err}");
    }

    #[test]
    fn a_file_in_place_of_the_storage_is_not_writable_for_every_user() {
        let d = tempfile::tempdir().unwrap();
        assert!(check_writable(d.path(), "main").is_ok(), "an empty storage");
        assert!(
            check_writable(&d.path().join("not-yet"), "main").is_ok(),
            "created at the first write"
        );
        save_pair(d.path(), "a.test");
        if let Err(e) = check_writable(d.path(), "main") {
            panic!("check_writable(d.path(), \"main\"): {e:?}");
        }
        let file = d.path().join("file");
        std::fs::write(&file, "not a directory").unwrap();
        let err = check_writable(&file, "main").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotADirectory, "{err}");
        std::fs::remove_dir_all(d.path().join("main")).unwrap();
        std::fs::write(
            d.path().join("main"),
            "a file where the certificate's directory goes",
        )
        .unwrap();
        let err = check_writable(d.path(), "main").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotADirectory, "{err}");
    }

    #[test]
    fn one_lock_holder_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let first = try_lock(d.path(), "main").unwrap();
        assert!(first.is_some());
        assert!(try_lock(d.path(), "main").unwrap().is_none(), "held");
        assert!(try_lock(d.path(), "other").unwrap().is_some(), "per certificate");
        drop(first);
        assert!(try_lock(d.path(), "main").unwrap().is_some(), "released on drop");
    }

    #[test]
    fn account_file_names_are_path_safe() {
        let p = account_path(Path::new("/c"), "https://acme-v02.api.letsencrypt.org/directory");
        assert_eq!(
            p,
            Path::new("/c/accounts/acme-v02.api.letsencrypt.org_directory.json")
        );
        assert_eq!(
            contact_path(Path::new("/c"), "https://ca.test/dir"),
            Path::new("/c/accounts/ca.test_dir.contact")
        );
    }
}

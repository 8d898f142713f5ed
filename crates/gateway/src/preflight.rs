//! Checks made before `gateway run` starts serving, so that a first run that cannot work
//! says why in one line and exits 1 (like `gateway check`), instead of a panic in a worker
//! thread: every listen address can be bound, the run directory is private, and the ACME
//! storage can be written (else every restart would order a new certificate with a new
//! account, into Let's Encrypt's duplicate-certificate limit of 5 a week).

use anyhow::{bail, Context};
use gateway_config::Config;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The environment variable the shipped `proxy.toml` reads for each listener.
fn env_var(key: &str) -> &'static str {
    match key {
        "listen.https" => "GATEWAY_HTTPS_ADDR",
        "listen.http" => "GATEWAY_HTTP_ADDR",
        _ => "GATEWAY_METRICS_ADDR",
    }
}

/// Binds each configured listen address once (then releases it for Pingora). Returns one
/// line per address that cannot be bound, naming the address, the cause and the fix.
pub fn check_listeners(cfg: &Config) -> Vec<String> {
    let mut wanted: Vec<(&str, SocketAddr)> = cfg.listen.https.iter().map(|a| ("listen.https", *a)).collect();
    wanted.extend(cfg.listen.http.iter().map(|a| ("listen.http", *a)));
    wanted.extend(cfg.listen.metrics.map(|a| ("listen.metrics", a)));
    let mut problems = Vec::new();
    for (key, addr) in wanted {
        if let Err(e) = TcpListener::bind(addr) {
            problems.push(explain(key, addr, &e, &cfg.source));
        }
    }
    problems
}

fn explain(key: &str, addr: SocketAddr, e: &std::io::Error, source: &Path) -> String {
    let var = env_var(key);
    let other = match addr.port() {
        443 => "127.0.0.1:8443",
        80 => "127.0.0.1:8080",
        _ => "127.0.0.1:<port>",
    };
    let fix = match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "ports below 1024 need root or the capability (`sudo setcap cap_net_bind_service=+ep {}`), or another address: {var}={other}",
            std::env::current_exe().map_or_else(|_| "gateway".into(), |p| p.display().to_string())
        ),
        std::io::ErrorKind::AddrInUse => {
            let holder = holder_of(addr).map_or_else(
                || format!("see `ss -ltnp 'sport = :{}'`", addr.port()),
                |(pid, name)| format!("held by process {pid} ({name})"),
            );
            format!("another process listens there ({holder}); stop it, or use another address: {var}={other}")
        }
        std::io::ErrorKind::AddrNotAvailable => {
            format!("no network interface of this machine has that address; use 0.0.0.0 or {var}={other}")
        }
        _ => format!("use another address: {var}={other}"),
    };
    format!("{}: {key} = {addr}: cannot listen: {e}: {fix}", source.display())
}

/// The process holding a listening TCP socket on `addr`'s port, from `/proc` (Linux; only
/// processes this user may inspect).
fn holder_of(addr: SocketAddr) -> Option<(u32, String)> {
    let port = format!(":{:04X}", addr.port());
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, rem_address, st (0A = LISTEN), ..., inode at index 9.
            if f.len() > 9 && f[1].ends_with(&port) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for proc_dir in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = proc_dir.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                let name = std::fs::read_to_string(proc_dir.path().join("comm")).unwrap_or_default();
                return Some((pid, name.trim().to_owned()));
            }
        }
    }
    None
}

/// Creates `[acme] storage` when missing (0700) and writes, syncs and removes a file in it.
/// `None` when it works (or there is no `[acme]`); otherwise one line naming the directory,
/// the cause, this process's uid/gid, the directory's owner and the fix.
pub fn check_storage(cfg: &Config) -> Option<String> {
    let dir = &cfg.acme.as_ref()?.storage;
    let e = try_write(dir).err()?;
    Some(explain_storage(dir, &e, &cfg.source))
}

/// What [`check_storage`] does, without the explanation.
fn try_write(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|mut f| {
            f.write_all(b"gateway storage check\n")?;
            f.sync_all()
        });
    let removed = std::fs::remove_file(&probe);
    written.and(removed)
}

/// `user (uid N)` or `uid N` when the name is unknown (no entry in /etc/passwd).
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("uid {uid} ({})", u.name),
        _ => format!("uid {uid}"),
    }
}

fn explain_storage(dir: &Path, e: &std::io::Error, source: &Path) -> String {
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    // The directory, or the nearest parent that exists when it could not be created.
    let existing = dir.ancestors().find(|p| std::fs::symlink_metadata(p).is_ok());
    let owner = existing
        .and_then(|p| Some((p, std::fs::metadata(p).ok()?)))
        .map_or_else(String::new, |(p, m)| {
            let what = if p == dir {
                "it".to_owned()
            } else {
                format!("{} (the nearest existing parent)", p.display())
            };
            format!(
                "; {what} belongs to {}, gid {}, mode {:04o}",
                user_name(m.uid()),
                m.gid(),
                m.mode() & 0o7777
            )
        });
    let fix = match e.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem => format!(
            "the file system is read-only (a `:ro` mount?): put {} on a writable volume (in docker compose a named volume, `gateway_state:/var/lib/gateway`)",
            dir.display()
        ),
        std::io::ErrorKind::StorageFull => {
            "the disk is full: free space there".to_owned()
        }
        std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists => {
            "something that is not a directory is in the way: remove it, or point [acme] storage (GATEWAY_STATE_DIR) elsewhere".to_owned()
        }
        _ => format!(
            "give it to this user (`chown -R {uid}:{gid} {}`), or in docker compose keep the state in a named volume (`gateway_state:/var/lib/gateway`, which the image creates for uid 10001) instead of a bind mount of a root-owned directory",
            dir.display()
        ),
    };
    format!(
        "{}: acme.storage = {}: cannot store certificates and the ACME account there: {e} (this process runs as {}, gid {gid}{owner}); {fix}. Without it every restart would order a new certificate with a new account (Let's Encrypt allows 5 duplicates a week)",
        source.display(),
        dir.display(),
        user_name(uid),
    )
}

/// The default run directory (pid file, upgrade socket): `$XDG_RUNTIME_DIR/gateway` for a
/// user session, `/run/gateway` for root, else `/tmp/gateway-<uid>`. Never a fixed path in
/// `/tmp` that another local user could create first.
pub fn default_run_dir() -> PathBuf {
    let uid = nix::unistd::getuid();
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("gateway");
    }
    if uid.is_root() {
        return PathBuf::from("/run/gateway");
    }
    PathBuf::from(format!("/tmp/gateway-{uid}"))
}

/// Creates the run directory 0700 if needed; refuses one owned by another user or writable
/// by others (someone else could plant a pid file or the upgrade socket there).
pub fn prepare_run_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating the run directory {}", dir.display()))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("reading the run directory {}", dir.display())),
        Ok(meta) => {
            let me = nix::unistd::getuid().as_raw();
            if !meta.is_dir() {
                bail!(
                    "the run directory {} is not a directory (a symlink or a file)",
                    dir.display()
                );
            }
            if meta.uid() != me {
                bail!(
                    "the run directory {} belongs to uid {}, not to this user (uid {me}); another user's gateway may be using it: run this command as uid {}, or give a directory of your own with --run-dir or GATEWAY_RUN_DIR",
                    dir.display(),
                    meta.uid(),
                    meta.uid()
                );
            }
            if meta.mode() & 0o022 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("making {} private (0700)", dir.display()))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The permission bits of `p`.
    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn a_port_in_use_names_the_address_and_the_holder() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = TcpListener::bind(addr).unwrap_err();
        let line = explain("listen.https", addr, &e, Path::new("proxy.toml"));
        assert!(
            line.starts_with(&format!("proxy.toml: listen.https = {addr}: cannot listen")),
            "{line}"
        );
        assert!(
            line.contains(&format!("held by process {}", std::process::id())),
            "{line}"
        );
        assert!(line.contains("GATEWAY_HTTPS_ADDR="), "{line}");
    }

    #[test]
    fn storage_is_created_and_probed_without_leaving_a_file() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("state/certs");
        try_write(&dir).expect("a storage this user can write");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the probe is removed"
        );
        // A file where the directory should be fails for every user, root included.
        let file = t.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = try_write(&file.join("certs")).unwrap_err();
        let line = explain_storage(&file.join("certs"), &e, Path::new("proxy.toml"));
        assert!(
            line.starts_with(&format!(
                "proxy.toml: acme.storage = {}/certs: cannot store certificates",
                file.display()
            )),
            "{line}"
        );
        assert!(line.contains("not a directory is in the way"), "{line}");
        assert!(!line.contains('\n'), "one line: {line}");
    }

    #[test]
    fn an_unwritable_storage_names_both_owners_and_the_fix() {
        let t = tempfile::tempdir().unwrap();
        // The mode a temporary directory gets varies; the message must name it.
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let line = explain_storage(t.path(), &e, Path::new("/etc/gateway/proxy.toml"));
        let me = nix::unistd::geteuid().as_raw();
        assert!(line.contains(&format!("this process runs as uid {me}")), "{line}");
        assert!(line.contains(&format!("it belongs to uid {me}")), "{line}");
        assert!(line.contains("mode 0700"), "{line}");
        assert!(line.contains("chown -R"), "{line}");
        assert!(line.contains("named volume"), "{line}");
        // Not created yet: the nearest parent that exists is named.
        let line = explain_storage(&t.path().join("a/b"), &e, Path::new("proxy.toml"));
        assert!(
            line.contains(&format!("{} (the nearest existing parent)", t.path().display())),
            "{line}"
        );
    }

    #[test]
    fn run_dir_is_created_private_and_a_foreign_one_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("run");
        prepare_run_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        prepare_run_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        let file = t.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(prepare_run_dir(&file).is_err());
        // Owned by someone else: as root, a directory given to `nobody`; otherwise `/`.
        if nix::unistd::getuid().is_root() {
            let other = t.path().join("other");
            std::fs::create_dir(&other).unwrap();
            nix::unistd::chown(&other, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            let err = prepare_run_dir(&other).unwrap_err().to_string();
            assert!(err.contains("belongs to uid 65534"), "{err}");
        } else {
            let err = prepare_run_dir(Path::new("/")).unwrap_err().to_string();
            assert!(err.contains("belongs to uid 0"), "{err}");
        }
    }
}

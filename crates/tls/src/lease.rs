//! The lease of a certificate: the right to order it, held by one gateway at a time among
//! every instance sharing the storage (a directory on one machine, or on a shared volume
//! such as NFS or Alibaba Cloud NAS). No `flock(2)`: NFS does not carry it reliably.
//!
//! ```text
//! <storage>/<name>/lease/<generation, 20 digits>.json   {"owner", "since", "expires"}
//! ```
//!
//! The lease is the file with the highest generation. It is taken by creating the next
//! generation with `link(2)` from a complete temporary file: the link fails when the name
//! exists, on NFS as locally, so of two instances racing for a free or expired lease
//! exactly one gets it. The holder renews it by replacing its own generation's file
//! (temporary file, rename); an instance that finds a higher generation than its own has
//! lost it. A lease whose `expires` has passed is free; so is one released (`expires` 0),
//! and one whose owner ran on this host under a process id that no longer exists.
//! Times are wall-clock Unix milliseconds: instances sharing a storage need clocks within a
//! small part of the lease's lifetime of each other (NTP).

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DIR: &str = "lease";

/// What a lease file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The holder: `host:pid:random` ([`owner_id`]).
    pub owner: String,
    /// When the holder took it (Unix ms).
    pub since: u64,
    /// When it lapses unless renewed (Unix ms); 0 once released.
    pub expires: u64,
    /// The holder's pid namespace (the inode of `/proc/self/ns/pid`; 0 when unknown): a pid
    /// says whether the holder still runs only to a process of the same namespace.
    #[serde(default)]
    pub pid_namespace: u64,
    /// The holder's boot (`/proc/sys/kernel/random/boot_id`): two machines may share a host
    /// name and a pid namespace inode, never a boot id.
    #[serde(default)]
    pub boot_id: String,
    /// Which keeper of the holder's process holds it (a reload starts a new one before the
    /// old one has released the lease).
    #[serde(default)]
    pub nonce: u64,
}

impl Record {
    /// A record of this process, for the keeper `nonce`.
    pub fn mine(since: u64, expires: u64, nonce: u64) -> Record {
        Record {
            owner: owner_id().to_owned(),
            since,
            expires,
            pid_namespace: pid_namespace(),
            boot_id: boot_id().to_owned(),
            nonce,
        }
    }

    /// A record that stands for an unreadable one: lapsed, so it is taken over.
    pub fn lapsed() -> Record {
        Record {
            owner: String::new(),
            since: 0,
            expires: 0,
            pid_namespace: 0,
            boot_id: String::new(),
            nonce: 0,
        }
    }

    /// Held by the keeper `nonce` of this process, and not lapsed at `now`.
    pub fn is_ours(&self, nonce: u64, now: u64) -> bool {
        self.owner == owner_id() && self.nonce == nonce && self.expires > now
    }

    /// Free to take at `now`: expired, released, or left by a dead process of this machine
    /// (same boot) and pid namespace.
    pub fn is_free(&self, now: u64) -> bool {
        self.expires <= now
            || (!self.boot_id.is_empty()
                && self.boot_id == boot_id()
                && self.pid_namespace != 0
                && self.pid_namespace == pid_namespace()
                && owner_is_dead(&self.owner))
    }
}

/// This machine's boot id, empty when unknown.
pub fn boot_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    })
}

/// The inode of this process's pid namespace (`pid:[4026531836]`), 0 when unknown.
pub fn pid_namespace() -> u64 {
    static NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NS.get_or_init(|| {
        std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .and_then(|t| {
                let t = t.to_string_lossy().into_owned();
                t.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
            })
            .unwrap_or(0)
    })
}

/// A lease this process holds.
#[derive(Debug, Clone)]
pub struct Lease {
    pub name: String,
    generation: u64,
    pub record: Record,
    dir: PathBuf,
}

/// The outcome of [`acquire`].
#[derive(Debug)]
pub enum Acquired {
    Held(Lease),
    /// Another live instance holds it.
    Taken(Record),
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The environment variable that names this instance in lease records (a pod or container
/// name); the host name when unset.
pub const INSTANCE_ENV: &str = "GATEWAY_INSTANCE";

/// This process's owner id: `instance:pid:random`, the instance being `GATEWAY_INSTANCE` or
/// the host name (the random part tells apart two processes that share a name and a pid,
/// such as pid 1 in two containers).
pub fn owner_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::env::var(INSTANCE_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()))
            .unwrap_or_else(|| "unknown".into())
            .replace(':', "-");
        format!("{host}:{}:{:08x}", std::process::id(), rand::random::<u32>())
    })
}

/// True when `owner` ran on this host (same host name) under a pid that no longer exists,
/// and is not this process (the caller checks the pid namespace).
fn owner_is_dead(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(_), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let me = owner_id();
    if owner == me || !me.starts_with(&format!("{host}:")) {
        return false;
    }
    let Ok(pid) = pid.parse::<i32>() else { return false };
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

fn lease_dir(storage: &Path, name: &str) -> PathBuf {
    storage.join(name).join(DIR)
}

fn file(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{generation:020}.json"))
}

/// Generations present, highest first.
fn generations(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut v: Vec<u64> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json")?.parse().ok())
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    v.sort_unstable_by(|a, b| b.cmp(a));
    Ok(v)
}

/// The lease of `name` as stored: its generation and record (`None`: never taken).
pub fn current(storage: &Path, name: &str) -> std::io::Result<Option<(u64, Record)>> {
    let dir = lease_dir(storage, name);
    // A file pruned by a new holder between the listing and the read: list again.
    for _ in 0..8 {
        let Some(generation) = generations(&dir)?.first().copied() else {
            return Ok(None);
        };
        match std::fs::read(file(&dir, generation)) {
            Ok(b) => {
                // An unreadable record counts as lapsed: the next generation replaces it.
                let record = serde_json::from_slice(&b).unwrap_or_else(|_| Record::lapsed());
                return Ok(Some((generation, record)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("the lease directory keeps changing"))
}

fn temp_file(dir: &Path, record: &Record) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(record).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    Ok(tmp)
}

/// Takes the lease of `name` for `ttl` if it is free, or renews it if the keeper `nonce` of
/// this process holds it.
pub fn acquire(storage: &Path, name: &str, ttl: Duration, nonce: u64) -> std::io::Result<Acquired> {
    let dir = lease_dir(storage, name);
    let now = now_ms();
    let found = current(storage, name)?;
    if let Some((generation, record)) = &found {
        if record.is_ours(nonce, now) {
            let mut lease = Lease {
                name: name.to_owned(),
                generation: *generation,
                record: record.clone(),
                dir,
            };
            return if renew(&mut lease, ttl)? {
                Ok(Acquired::Held(lease))
            } else {
                Ok(Acquired::Taken(
                    current(storage, name)?.map(|(_, r)| r).unwrap_or(lease.record),
                ))
            };
        }
        if !record.is_free(now) {
            return Ok(Acquired::Taken(record.clone()));
        }
    }
    let generation = found.as_ref().map_or(1, |(g, _)| g + 1);
    let record = Record::mine(now, now + ttl.as_millis() as u64, nonce);
    let tmp = temp_file(&dir, &record)?;
    let linked = std::fs::hard_link(&tmp, file(&dir, generation));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) if is_newest(&dir, generation)? => {
            // Older generations are history now.
            for g in generations(&dir)?.into_iter().filter(|g| *g < generation) {
                let _ = std::fs::remove_file(file(&dir, g));
            }
            Ok(Acquired::Held(Lease {
                name: name.to_owned(),
                generation,
                record,
                dir,
            }))
        }
        // Linked a generation others had already gone past (this process stalled between
        // reading and linking): not ours.
        Ok(()) => {
            let _ = std::fs::remove_file(file(&dir, generation));
            let holder = current(storage, name)?.map(|(_, r)| r);
            Ok(Acquired::Taken(holder.unwrap_or(record)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let holder = current(storage, name)?.map(|(_, r)| r);
            Ok(Acquired::Taken(holder.unwrap_or(record)))
        }
        Err(e) => Err(e),
    }
}

/// `generation` is the newest one and nothing above it exists.
fn is_newest(dir: &Path, generation: u64) -> std::io::Result<bool> {
    Ok(generations(dir)?.first() == Some(&generation) && !file(dir, generation + 1).exists())
}

/// The stored lease is still exactly `lease` (no newer generation, not rewritten by another
/// keeper).
fn unchanged(lease: &Lease) -> std::io::Result<bool> {
    let storage = lease
        .dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    Ok(current(storage, &lease.name)?.is_some_and(|(g, r)| g == lease.generation && r == lease.record))
}

/// Extends `lease` to `ttl` from now; `false` when it was lost: a newer generation exists
/// (another instance took it after it lapsed), the record was rewritten by another keeper,
/// or it lapsed already (then it is taken anew, as a new generation, by [`acquire`]).
pub fn renew(lease: &mut Lease, ttl: Duration) -> std::io::Result<bool> {
    let now = now_ms();
    if lease.record.expires <= now || !unchanged(lease)? {
        return Ok(false);
    }
    let record = Record {
        // Strictly later than the record it replaces, even within one millisecond, so that
        // every rewrite is told apart from the one before it (a stale handle never matches).
        expires: (now + ttl.as_millis() as u64).max(lease.record.expires + 1),
        ..lease.record.clone()
    };
    write_own(lease, &record)?;
    if !is_newest(&lease.dir, lease.generation)? {
        // Another instance linked the next generation meanwhile (and may have pruned ours,
        // which the rename then recreated): ours is history.
        let _ = std::fs::remove_file(file(&lease.dir, lease.generation));
        return Ok(false);
    }
    lease.record = record;
    // Leftovers: older generations recreated by a late renewal elsewhere, temporary files
    // of a process that died.
    for g in generations(&lease.dir)?
        .into_iter()
        .filter(|g| *g < lease.generation)
    {
        let _ = std::fs::remove_file(file(&lease.dir, g));
    }
    Ok(true)
}

/// Gives the lease up (the next instance need not wait for it to lapse); nothing is written
/// when it is no longer exactly ours.
pub fn release(lease: &Lease) -> std::io::Result<()> {
    if !unchanged(lease)? {
        return Ok(());
    }
    let record = Record {
        expires: 0,
        ..lease.record.clone()
    };
    write_own(lease, &record)
}

fn write_own(lease: &Lease, record: &Record) -> std::io::Result<()> {
    let tmp = temp_file(&lease.dir, record)?;
    let target = file(&lease.dir, lease.generation);
    let r = std::fs::rename(&tmp, &target);
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// How `gateway certs` words a lease.
pub fn describe(record: Option<&Record>, now: u64) -> String {
    let at = |ms: u64| crate::storage::rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
    match record {
        None => "free (never taken)".into(),
        Some(r) if r.expires == 0 => format!("free (released by {})", r.owner),
        Some(r) if r.is_free(now) => format!("free (lapsed at {}, last held by {})", at(r.expires), r.owner),
        Some(r) => {
            let mine = if r.owner == owner_id() {
                " (this process)"
            } else {
                ""
            };
            format!(
                "held by {}{mine} since {}, until {}",
                r.owner,
                at(r.since),
                at(r.expires)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(storage: &Path, owner: &str, expires: u64) {
        let dir = lease_dir(storage, "main");
        std::fs::create_dir_all(&dir).unwrap();
        let g = generations(&dir).unwrap().first().copied().unwrap_or(0) + 1;
        let r = Record {
            owner: owner.into(),
            since: 1,
            expires,
            ..Record::mine(0, 0, 0)
        };
        std::fs::write(file(&dir, g), serde_json::to_vec(&r).unwrap()).unwrap();
    }

    #[test]
    fn one_holder_then_renewal_release_and_takeover() {
        let d = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        let Acquired::Held(mut lease) = acquire(d.path(), "main", ttl, 7).unwrap() else {
            panic!("a free lease is taken")
        };
        // Held by this keeper: acquiring again renews; another keeper of this process (a
        // reload's new loop) waits for it.
        let Acquired::Held(again) = acquire(d.path(), "main", ttl, 7).unwrap() else {
            panic!("renewed")
        };
        assert!(matches!(
            acquire(d.path(), "main", ttl, 8).unwrap(),
            Acquired::Taken(_)
        ));
        // The first handle is stale now (the record was rewritten): it neither renews nor
        // releases over the newer record.
        assert!(!renew(&mut lease, ttl).unwrap());
        release(&lease).unwrap();
        assert!(current(d.path(), "main").unwrap().unwrap().1.expires > now_ms());
        let mut lease = again;
        assert!(renew(&mut lease, ttl).unwrap());
        release(&lease).unwrap();
        let (_, r) = current(d.path(), "main").unwrap().unwrap();
        assert_eq!(r.expires, 0);
        assert!(describe(Some(&r), now_ms()).starts_with("free (released by"));
        // Another live instance holds it: taken.
        fake(d.path(), "elsewhere:1:0", now_ms() + 60_000);
        match acquire(d.path(), "main", ttl, 7).unwrap() {
            Acquired::Taken(r) => assert_eq!(r.owner, "elsewhere:1:0"),
            other => panic!("{other:?}"),
        }
        // Our old lease was superseded: renewing it says so.
        assert!(!renew(&mut lease, ttl).unwrap());
        // Once it lapses, it is ours, and the older generations are pruned.
        fake(d.path(), "elsewhere:1:0", now_ms() - 1);
        let Acquired::Held(l) = acquire(d.path(), "main", ttl, 7).unwrap() else {
            panic!("a lapsed lease is taken over")
        };
        assert_eq!(
            generations(&lease_dir(d.path(), "main")).unwrap(),
            vec![l.generation]
        );
    }

    #[test]
    fn a_renewal_that_recreates_a_pruned_generation_is_lost_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        let Acquired::Held(mut lease) = acquire(d.path(), "main", ttl, 1).unwrap() else {
            panic!("taken")
        };
        let dir = lease_dir(d.path(), "main");
        // Another instance took the next generation and pruned ours, after our check.
        let next = file(&dir, lease.generation + 1);
        std::fs::write(
            &next,
            serde_json::to_vec(&Record {
                owner: "b:1:0".into(),
                ..Record::mine(1, now_ms() + 60_000, 0)
            })
            .unwrap(),
        )
        .unwrap();
        write_own(&lease, &lease.record).unwrap();
        assert!(!is_newest(&dir, lease.generation).unwrap());
        assert!(
            !renew(&mut lease, ttl).unwrap(),
            "a newer generation exists: lost"
        );
        // The holder of the newer one prunes the recreated file at its next renewal.
        let mut theirs = Lease {
            name: "main".into(),
            generation: lease.generation + 1,
            record: current(d.path(), "main").unwrap().unwrap().1,
            dir: dir.clone(),
        };
        assert!(renew(&mut theirs, ttl).unwrap());
        assert_eq!(
            generations(&dir).unwrap(),
            vec![lease.generation + 1],
            "our recreated file is pruned"
        );
    }

    #[test]
    fn an_unreadable_record_is_taken_over() {
        let d = tempfile::tempdir().unwrap();
        let dir = lease_dir(d.path(), "main");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(file(&dir, 3), "{ torn").unwrap();
        let Acquired::Held(l) = acquire(d.path(), "main", Duration::from_secs(5), 1).unwrap() else {
            panic!("an unreadable lease is lapsed")
        };
        assert_eq!(l.generation, 4);
    }

    #[test]
    fn racing_instances_get_one_lease() {
        let d = tempfile::tempdir().unwrap();
        let dir = lease_dir(d.path(), "main");
        // Two takers of generation 1: the second link fails.
        let r = Record {
            owner: "x:1:0".into(),
            ..Record::mine(0, u64::MAX, 0)
        };
        let t1 = temp_file(&dir, &r).unwrap();
        let t2 = temp_file(&dir, &r).unwrap();
        assert!(std::fs::hard_link(&t1, file(&dir, 1)).is_ok());
        let e = std::fs::hard_link(&t2, file(&dir, 1)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn a_dead_process_of_this_machine_frees_its_lease() {
        let d = tempfile::tempdir().unwrap();
        let host = owner_id().split(':').next().unwrap().to_owned();
        // A pid that does not exist (above the kernel's pid_max).
        fake(d.path(), &format!("{host}:99999999:0"), now_ms() + 60_000);
        assert!(matches!(
            acquire(d.path(), "main", Duration::from_secs(5), 1).unwrap(),
            Acquired::Held(_)
        ));
    }

    #[test]
    fn a_pid_of_another_machine_or_pid_namespace_says_nothing() {
        let host = owner_id().split(':').next().unwrap().to_owned();
        let r = Record {
            owner: format!("{host}:99999999:0"),
            ..Record::mine(1, now_ms() + 60_000, 0)
        };
        assert!(
            r.is_free(now_ms()) || boot_id().is_empty(),
            "this machine, a dead pid"
        );
        let other_ns = Record {
            pid_namespace: pid_namespace() + 1,
            ..r.clone()
        };
        assert!(
            !other_ns.is_free(now_ms()),
            "another container with the same host name"
        );
        let other_boot = Record {
            boot_id: "another-machine".into(),
            ..r.clone()
        };
        assert!(
            !other_boot.is_free(now_ms()),
            "another machine with the same host name"
        );
        let unknown = Record {
            boot_id: String::new(),
            ..r
        };
        assert!(!unknown.is_free(now_ms()));
    }
}

//! The certificate store: which certificate to present for an SNI name, swappable while
//! serving. A certificate that fails to load never replaces the last good one.

use crate::pem::{self, Loaded};
use crate::TlsError;
use arc_swap::ArcSwap;
use gateway_config::{CertFiles, IfMissing};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// Where a certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// PEM files, re-read on reload (certbot, or files copied in by hand).
    Files {
        cert: PathBuf,
        key: PathBuf,
        if_missing: IfMissing,
    },
    /// Installed by the ACME client.
    Managed,
    /// The store's own self-signed stand-in, served only while no other certificate is
    /// usable, so that HTTPS never stops for lack of a certificate (see [`CertStore::configure`]).
    Placeholder,
}

/// Name of the store's own stand-in entry (`gateway certs`, metrics).
pub const PLACEHOLDER: &str = "self-signed";

/// One named certificate as currently served.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    /// SNI names this certificate answers for; empty means the certificate's own names.
    pub hosts: Vec<String>,
    pub source: Source,
    pub cert: Option<Loaded>,
    /// Why the last load or order failed, if it did (the previous certificate is still served).
    pub last_error: Option<CertError>,
}

/// Why a certificate is not (or not freshly) served.
#[derive(Clone, Debug)]
pub enum CertError {
    /// Its files were refused.
    Load(Arc<TlsError>),
    /// The ACME loop's account of its last failure (the CA's problem, the storage): the
    /// text `status.json` stores, which every process sharing the storage reads.
    Acme(String),
}

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertError::Load(e) => f.write_str(&crate::error_chain(e.as_ref())),
            CertError::Acme(text) => f.write_str(text),
        }
    }
}

/// What a (re)load of the certificate files has to say: logged as warnings and returned to
/// `gateway reload`.
#[derive(Debug)]
pub enum StoreNotice {
    /// Served although expired.
    Expired { name: String, file: PathBuf },
    /// The files do not exist yet: a self-signed stand-in is served (`if_missing`).
    StandIn {
        name: String,
        file: PathBuf,
        hosts: Vec<String>,
    },
    /// The files were refused; the previous certificate, if any, is kept.
    Refused {
        name: String,
        keeping: bool,
        error: Arc<TlsError>,
    },
    /// No stand-in could be generated.
    Generate { name: Option<String>, error: TlsError },
}

impl std::fmt::Display for StoreNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreNotice::Expired { name, file } => write!(
                f,
                "certificate `{name}` ({}) has expired; serving it anyway",
                file.display()
            ),
            StoreNotice::StandIn { name, file, hosts } => write!(
                f,
                "certificate `{name}`: {} does not exist yet; serving a self-signed certificate for {}",
                file.display(),
                hosts.join(", ")
            ),
            StoreNotice::Refused { name, keeping, error } => write!(
                f,
                "certificate `{name}`: {}{}",
                crate::error_chain(error.as_ref()),
                if *keeping {
                    "; keeping the previous certificate"
                } else {
                    ""
                }
            ),
            StoreNotice::Generate {
                name: Some(name),
                error,
            } => write!(f, "certificate `{name}`: {}", crate::error_chain(error)),
            StoreNotice::Generate { name: None, error } => {
                write!(
                    f,
                    "cannot generate a self-signed certificate: {}",
                    crate::error_chain(error)
                )
            }
        }
    }
}

impl Entry {
    /// The configured hosts, or the certificate's own names when none are configured.
    pub fn served_names<'a>(&'a self, cert: &'a Loaded) -> &'a [String] {
        if self.hosts.is_empty() {
            &cert.names
        } else {
            &self.hosts
        }
    }
}

/// An immutable view used on the handshake path.
#[derive(Default, Debug)]
pub struct Snapshot {
    pub entries: Vec<Entry>,
    exact: HashMap<String, usize>,
    /// `example.com` for `*.example.com`.
    wildcard: HashMap<String, usize>,
    default: Option<usize>,
}

impl Snapshot {
    fn build(entries: Vec<Entry>, default_name: Option<&str>) -> Self {
        let mut s = Snapshot {
            entries,
            ..Default::default()
        };
        for (i, e) in s.entries.iter().enumerate() {
            let Some(cert) = &e.cert else { continue };
            for h in e.served_names(cert) {
                match h.strip_prefix("*.") {
                    Some(suffix) => s.wildcard.entry(suffix.to_owned()).or_insert(i),
                    None => s.exact.entry(h.clone()).or_insert(i),
                };
            }
        }
        let usable = |i: &usize| s.entries[*i].cert.is_some();
        s.default = default_name
            .and_then(|n| s.entries.iter().position(|e| e.name == n))
            .filter(usable)
            .or_else(|| (0..s.entries.len()).find(usable));
        s
    }

    /// The certificate for an SNI name; the default one without SNI or for an unknown name.
    pub fn lookup(&self, sni: Option<&str>) -> Option<&Entry> {
        let idx = sni
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
            .and_then(|n| {
                self.exact
                    .get(&n)
                    .or_else(|| n.split_once('.').and_then(|(_, rest)| self.wildcard.get(rest)))
            })
            .copied()
            .or(self.default)?;
        self.entries.get(idx)
    }
}

#[derive(Default)]
struct Inner {
    entries: Vec<Entry>,
    default_name: Option<String>,
    /// Names for the stand-in served when no configured certificate is usable.
    fallback_names: Vec<String>,
    /// Self-signed stand-ins by host list, so a reload does not mint a new one each time.
    stand_ins: HashMap<Vec<String>, Loaded>,
}

/// Certificates by SNI; implements rustls' [`ResolvesServerCert`].
pub struct CertStore {
    current: ArcSwap<Snapshot>,
    inner: Mutex<Inner>,
    /// TLS-ALPN-01 answers by name, while an order waits for its validation.
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("entries", &self.current.load().entries.len())
            .finish()
    }
}

impl Default for CertStore {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            inner: Mutex::new(Inner::default()),
            alpn: Mutex::default(),
        }
    }
}

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Applies the `[tls]` section: the file-backed certificates, the ACME-managed names and
    /// the default name. Returns one message per certificate that could not be loaded.
    ///
    /// HTTPS is never lost to a reload: an entry keeps the certificate it served under its
    /// name until a new one loads (even when its files or source changed), and when no
    /// configured certificate is usable at all (no `[tls]` files, no ACME, or all broken) a
    /// self-signed stand-in for `fallback_names` (or `localhost`) is served, the same one
    /// across reloads. Names of a removed entry are served by the default certificate.
    pub fn configure(
        &self,
        files: &[CertFiles],
        managed: &[(String, Vec<String>)],
        default: Option<&str>,
        fallback_names: &[String],
    ) -> Vec<StoreNotice> {
        let mut inner = self.lock();
        let old: HashMap<String, Entry> = inner.entries.drain(..).map(|e| (e.name.clone(), e)).collect();
        let mut entries = Vec::new();
        for f in files {
            let source = Source::Files {
                cert: f.cert.clone(),
                key: f.key.clone(),
                if_missing: f.if_missing,
            };
            let prev = old.get(&f.name).filter(|e| e.source != Source::Placeholder);
            entries.push(Entry {
                name: f.name.clone(),
                hosts: f.hosts.clone(),
                source,
                cert: prev.and_then(|e| e.cert.clone()),
                last_error: None,
            });
        }
        for (name, hosts) in managed {
            let prev = old.get(name).filter(|e| e.source != Source::Placeholder);
            entries.push(Entry {
                name: name.clone(),
                hosts: hosts.clone(),
                source: Source::Managed,
                cert: prev.and_then(|e| e.cert.clone()),
                last_error: prev.and_then(|e| e.last_error.clone()),
            });
        }
        inner.entries = entries;
        inner.default_name = default.map(str::to_owned);
        inner.fallback_names = fallback_names.to_vec();
        drop(inner);
        self.reload_files()
    }

    /// Adds the stand-in when no other entry has a certificate, drops it otherwise.
    fn ensure_fallback(inner: &mut Inner, problems: &mut Vec<StoreNotice>) {
        let usable = inner
            .entries
            .iter()
            .any(|e| e.source != Source::Placeholder && e.cert.is_some());
        inner.entries.retain(|e| e.source != Source::Placeholder);
        if usable {
            return;
        }
        let names = if inner.fallback_names.is_empty() {
            vec!["localhost".to_owned()]
        } else {
            inner.fallback_names.clone()
        };
        let generated = match inner.stand_ins.get(&names) {
            Some(s) => Ok(s.clone()),
            None => pem::self_signed(&names),
        };
        match generated {
            Ok(s) => {
                inner.stand_ins.insert(names.clone(), s.clone());
                inner.entries.push(Entry {
                    name: PLACEHOLDER.to_owned(),
                    hosts: names,
                    source: Source::Placeholder,
                    cert: Some(s),
                    last_error: None,
                });
            }
            Err(error) => problems.push(StoreNotice::Generate { name: None, error }),
        }
    }

    /// Re-reads every file-backed certificate; a failure keeps the previous certificate.
    pub fn reload_files(&self) -> Vec<StoreNotice> {
        let mut inner = self.lock();
        let mut problems = Vec::new();
        let mut stand_ins = std::mem::take(&mut inner.stand_ins);
        for e in &mut inner.entries {
            let Source::Files {
                cert,
                key,
                if_missing,
            } = &e.source
            else {
                continue;
            };
            let missing = !cert.exists() && !key.exists();
            match pem::load_files(cert, key) {
                Ok(loaded) => {
                    if loaded.not_after < SystemTime::now() {
                        problems.push(StoreNotice::Expired {
                            name: e.name.clone(),
                            file: cert.clone(),
                        });
                    }
                    e.cert = Some(loaded);
                    e.last_error = None;
                }
                Err(err) => {
                    let serving_real = e.cert.as_ref().is_some_and(|c| !c.self_signed);
                    if missing && *if_missing == IfMissing::SelfSigned && !serving_real {
                        let generated = match stand_ins.get(&e.hosts) {
                            Some(s) => Ok(s.clone()),
                            None => pem::self_signed(&e.hosts),
                        };
                        match generated {
                            Ok(s) => {
                                stand_ins.insert(e.hosts.clone(), s.clone());
                                problems.push(StoreNotice::StandIn {
                                    name: e.name.clone(),
                                    file: cert.clone(),
                                    hosts: e.hosts.clone(),
                                });
                                e.cert = Some(s);
                                e.last_error = None;
                                continue;
                            }
                            Err(error) => {
                                problems.push(StoreNotice::Generate {
                                    name: Some(e.name.clone()),
                                    error,
                                });
                                continue;
                            }
                        }
                    }
                    let error = Arc::new(err);
                    problems.push(StoreNotice::Refused {
                        name: e.name.clone(),
                        keeping: e.cert.is_some(),
                        error: error.clone(),
                    });
                    e.last_error = Some(CertError::Load(error));
                }
            }
        }
        inner.stand_ins = stand_ins;
        Self::ensure_fallback(&mut inner, &mut problems);
        self.publish(&inner);
        problems
    }

    /// Installs a certificate obtained at run time (ACME) under `name`.
    pub fn install(&self, name: &str, hosts: &[String], cert: Loaded) {
        let mut inner = self.lock();
        match inner.entries.iter_mut().find(|e| e.name == name) {
            Some(e) => {
                e.cert = Some(cert);
                e.hosts = hosts.to_vec();
                e.last_error = None;
            }
            None => inner.entries.push(Entry {
                name: name.to_owned(),
                hosts: hosts.to_vec(),
                source: Source::Managed,
                cert: Some(cert),
                last_error: None,
            }),
        }
        Self::ensure_fallback(&mut inner, &mut Vec::new());
        self.publish(&inner);
    }

    /// Records why obtaining `name` failed (shown by `gateway certs`).
    pub fn set_error(&self, name: &str, error: Option<String>) {
        let mut inner = self.lock();
        if let Some(e) = inner.entries.iter_mut().find(|e| e.name == name) {
            e.last_error = error.map(CertError::Acme);
        }
        self.publish(&inner);
    }

    fn publish(&self, inner: &Inner) {
        self.current.store(Arc::new(Snapshot::build(
            inner.entries.clone(),
            inner.default_name.as_deref(),
        )));
    }
}

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737 section 6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

impl CertStore {
    /// Serves `answer` (see [`crate::pem::acme_tls_alpn`]) to a TLS-ALPN-01 validation of
    /// `name` until [`CertStore::withdraw_alpn`].
    pub fn publish_alpn(&self, name: &str, answer: Arc<CertifiedKey>) {
        self.alpn_answers().insert(name.to_ascii_lowercase(), answer);
    }

    pub fn withdraw_alpn(&self, name: &str) {
        self.alpn_answers().remove(&name.to_ascii_lowercase());
    }

    fn alpn_answers(&self) -> MutexGuard<'_, HashMap<String, Arc<CertifiedKey>>> {
        self.alpn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 section 3: a validation offers `acme-tls/1` only, and gets the challenge
        // certificate or no handshake. Browsers never offer it.
        if let Some(mut protocols) = hello.alpn() {
            if protocols.any(|p| p == ACME_TLS_ALPN) {
                let name = hello.server_name()?.trim_end_matches('.').to_ascii_lowercase();
                return self.alpn_answers().get(&name).cloned();
            }
        }
        let snap = self.current.load();
        snap.lookup(hello.server_name())
            .and_then(|e| e.cert.as_ref())
            .map(|c| c.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, host: &str) -> (PathBuf, PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let sub = dir.join(host);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("fullchain.pem"), c.cert.pem()).unwrap();
        std::fs::write(sub.join("privkey.pem"), c.signing_key.serialize_pem()).unwrap();
        (sub.join("fullchain.pem"), sub.join("privkey.pem"))
    }

    fn files(name: &str, hosts: &[&str], cert: PathBuf, key: PathBuf, if_missing: IfMissing) -> CertFiles {
        CertFiles {
            name: name.into(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            cert,
            key,
            if_missing,
        }
    }

    #[test]
    fn sni_picks_the_certificate_and_default_covers_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ka) = write_pair(dir.path(), "a.test");
        let (cb, kb) = write_pair(dir.path(), "b.test");
        let store = CertStore::new();
        let errs = store.configure(
            &[
                files("a", &[], ca, ka, IfMissing::Error),
                files("b", &[], cb, kb, IfMissing::Error),
            ],
            &[],
            Some("b"),
            &[],
        );
        assert!(errs.is_empty(), "{errs:?}");
        let s = store.snapshot();
        assert_eq!(s.lookup(Some("A.test.")).unwrap().name, "a");
        assert_eq!(s.lookup(Some("b.test")).unwrap().name, "b");
        assert_eq!(s.lookup(None).unwrap().name, "b");
        assert_eq!(s.lookup(Some("unknown.test")).unwrap().name, "b");
    }

    #[test]
    fn a_broken_file_keeps_the_last_good_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_pair(dir.path(), "a.test");
        let store = CertStore::new();
        store.configure(
            &[files("a", &["a.test"], c.clone(), k, IfMissing::Error)],
            &[],
            None,
            &[],
        );
        let before = store
            .snapshot()
            .lookup(Some("a.test"))
            .unwrap()
            .cert
            .clone()
            .unwrap();
        std::fs::write(&c, "garbage").unwrap();
        let errs = store.reload_files();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].to_string().contains("keeping the previous certificate"),
            "{errs:?}"
        );
        let after = store.snapshot();
        let e = after.lookup(Some("a.test")).unwrap();
        assert!(Arc::ptr_eq(&before.key, &e.cert.as_ref().unwrap().key));
        assert!(e.last_error.is_some());
    }

    #[test]
    fn missing_files_get_a_stable_self_signed_stand_in_then_the_real_one() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("m/fullchain.pem");
        let k = dir.path().join("m/privkey.pem");
        let store = CertStore::new();
        let msgs = store.configure(
            &[files(
                "m",
                &["m.test"],
                c.clone(),
                k.clone(),
                IfMissing::SelfSigned,
            )],
            &[],
            None,
            &[],
        );
        assert!(msgs[0].to_string().contains("self-signed"), "{msgs:?}");
        let first = store.snapshot().lookup(None).unwrap().cert.clone().unwrap();
        assert!(first.self_signed);
        store.reload_files();
        let second = store.snapshot().lookup(None).unwrap().cert.clone().unwrap();
        assert!(Arc::ptr_eq(&first.key, &second.key), "the stand-in is reused");
        let (rc, rk) = write_pair(dir.path(), "m.test");
        std::fs::create_dir_all(c.parent().unwrap()).unwrap();
        std::fs::rename(rc, &c).unwrap();
        std::fs::rename(rk, &k).unwrap();
        assert!(store.reload_files().is_empty());
        assert!(
            !store
                .snapshot()
                .lookup(Some("m.test"))
                .unwrap()
                .cert
                .as_ref()
                .unwrap()
                .self_signed
        );
    }
}

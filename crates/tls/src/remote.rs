//! ACME state in S3-compatible object storage (`[acme] storage = "s3://bucket/prefix"`):
//! Alibaba Cloud OSS, AWS S3, MinIO, through the `object_store` crate, with the endpoint and
//! credentials from the usual environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`,
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`: `AmazonS3Builder::from_env`).
//!
//! ```text
//! <prefix>/<name>/v-<unix ns>-<random>/privkey.pem, fullchain.pem   one issuance
//! <prefix>/<name>/current                                          "v-...": the unit in use
//! <prefix>/<name>/lease.json                                       {"owner", "since", "expires"}
//! <prefix>/.challenges/<token>                                     an HTTP-01 key authorization
//! ```
//!
//! An issuance is written as one unit: both objects of a new version, then the small
//! `current` pointer (one PUT, atomic in S3), so a reader sees the old pair or the new one.
//! The lease is one object taken with a conditional write: `If-None-Match: *` when absent,
//! `If-Match: <ETag>` to renew, to release and to take over one that lapsed (RFC 9110
//! section 13.1; S3 answers 412 Precondition Failed to the loser), so two instances never
//! both get it. Each instance keeps its own copy of the certificates in its local
//! directory ([`crate::storage`]), from which it serves after a restart even when the
//! object storage cannot be reached.

use crate::lease::{now_ms, owner_id, Record};
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::TlsError as RemoteError;

/// One `s3://bucket/prefix`.
#[derive(Debug)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
    /// The outcome of [`Remote::check_conditional_writes`], run once.
    probed: tokio::sync::OnceCell<Result<(), String>>,
}

/// A lease held in the object storage: its record and the ETag that must still match.
#[derive(Debug, Clone)]
pub struct RemoteLease {
    pub name: String,
    pub record: Record,
    e_tag: Option<String>,
    version: Option<String>,
}

/// The outcome of [`Remote::acquire`].
#[derive(Debug)]
pub enum RemoteAcquired {
    Held(RemoteLease),
    Taken(Record),
}

/// What [`Remote::pull_unit`] found.
#[derive(Debug)]
pub enum Pulled {
    /// No `current` pointer: nothing stored (or the bucket was emptied).
    Absent,
    /// The unit read last time.
    Same,
    New(Unit),
}

/// An issuance read from the object storage.
#[derive(Debug)]
pub struct Unit {
    pub version: String,
    pub chain: Vec<u8>,
    pub key: Vec<u8>,
}

/// `s3://bucket/prefix` split into the bucket and the prefix (no slashes at its ends);
/// `None` when it is not such a URL.
pub fn parse_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, prefix.trim_matches('/')))
}

impl Remote {
    /// A client for `url` (`s3://bucket/prefix`) configured from the environment.
    pub fn from_url(url: &str) -> Result<Remote, RemoteError> {
        let (bucket, prefix) = parse_url(url).ok_or_else(|| RemoteError::Remote {
            what: "not an s3://bucket/prefix URL".into(),
            url: url.to_owned(),
            source: object_store::Error::Generic {
                store: "S3",
                source: "bad URL".into(),
            },
        })?;
        // Short deadlines and few retries: a lease is renewed every third of its lifetime,
        // and a request that hangs in retries must not outlive it (the keeper also bounds
        // each call).
        let retry = object_store::RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            ..object_store::RetryConfig::default()
        };
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(retry)
            // Merged into the options read from the environment (AWS_ALLOW_HTTP...).
            .with_config(
                object_store::aws::AmazonS3ConfigKey::Client(object_store::ClientConfigKey::Timeout),
                "10s",
            )
            .with_config(
                object_store::aws::AmazonS3ConfigKey::Client(object_store::ClientConfigKey::ConnectTimeout),
                "5s",
            )
            .build()
            .map_err(|source| RemoteError::Remote {
                what: "cannot configure the S3 client from the environment".into(),
                url: url.to_owned(),
                source,
            })?;
        Ok(Remote {
            store: Arc::new(store),
            prefix: prefix.to_owned(),
            url: url.to_owned(),
            probed: tokio::sync::OnceCell::new(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn err(&self, what: impl Into<String>) -> impl FnOnce(object_store::Error) -> RemoteError + '_ {
        let what = what.into();
        move |source| RemoteError::Remote {
            what,
            url: self.url.clone(),
            source,
        }
    }

    /// The object at `rel` with its ETag and version; `None` when absent.
    async fn get(&self, rel: &str) -> Result<Option<(Vec<u8>, UpdateVersion)>, RemoteError> {
        match self.store.get(&self.path(rel)).await {
            Ok(r) => {
                let version = UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                };
                let bytes = r.bytes().await.map_err(self.err(format!("cannot read {rel}")))?;
                Ok(Some((bytes.to_vec(), version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(format!("cannot read {rel}"))(e)),
        }
    }

    async fn put(
        &self,
        rel: &str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> Result<UpdateVersion, object_store::Error> {
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let r = self
            .store
            .put_opts(&self.path(rel), PutPayload::from(bytes), opts)
            .await?;
        Ok(UpdateVersion {
            e_tag: r.e_tag,
            version: r.version,
        })
    }

    /// Stores one issuance of `name` (both objects, then the pointer); returns its version.
    pub async fn push_unit(&self, name: &str, chain: &[u8], key: &[u8]) -> Result<String, RemoteError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let version = format!("v-{nanos:020}-{:08x}", rand::random::<u32>());
        for (file, bytes) in [("privkey.pem", key), ("fullchain.pem", chain)] {
            let rel = format!("{name}/{version}/{file}");
            self.put(&rel, bytes.to_vec(), PutMode::Overwrite)
                .await
                .map_err(self.err(format!("cannot write {rel}")))?;
        }
        let rel = format!("{name}/current");
        self.put(&rel, version.clone().into_bytes(), PutMode::Overwrite)
            .await
            .map_err(self.err(format!("cannot write {rel}")))?;
        self.prune(name, &version).await;
        Ok(version)
    }

    /// Deletes the versions of `name` older than the newest two (`current` and the one
    /// before it): they hold old private keys. Best effort.
    async fn prune(&self, name: &str, current: &str) {
        use futures_util::StreamExt;
        let prefix = self.path(&format!("{name}/"));
        let mut versions: Vec<String> = Vec::new();
        let mut objects = Vec::new();
        let mut list = self.store.list(Some(&prefix));
        while let Some(Ok(meta)) = list.next().await {
            let rel = meta
                .location
                .as_ref()
                .strip_prefix(prefix.as_ref())
                .unwrap_or("")
                .trim_start_matches('/')
                .to_owned();
            if let Some((v, _)) = rel.split_once('/') {
                if v.starts_with("v-") {
                    if !versions.iter().any(|x| x == v) {
                        versions.push(v.to_owned());
                    }
                    objects.push((v.to_owned(), meta.location.clone()));
                }
            }
        }
        versions.sort_unstable();
        versions.reverse();
        let keep: Vec<&String> = versions.iter().take(2).collect();
        for (v, location) in objects {
            if v != current && !keep.contains(&&v) {
                let _ = self.store.delete(&location).await;
            }
        }
    }

    /// The unit `current` points at, unless it is `known` (the version read last time).
    pub async fn pull_unit(&self, name: &str, known: Option<&str>) -> Result<Pulled, RemoteError> {
        let Some((pointer, _)) = self.get(&format!("{name}/current")).await? else {
            return Ok(Pulled::Absent);
        };
        let version = String::from_utf8_lossy(&pointer).trim().to_owned();
        if !version.starts_with("v-") || version.contains('/') {
            return Err(self
                .err(format!("{name}/current does not name a version (`{version}`)"))(
                object_store::Error::Generic {
                    store: "S3",
                    source: "bad pointer".into(),
                },
            ));
        }
        if known == Some(version.as_str()) {
            return Ok(Pulled::Same);
        }
        let chain = self.get(&format!("{name}/{version}/fullchain.pem")).await?;
        let key = self.get(&format!("{name}/{version}/privkey.pem")).await?;
        match (chain, key) {
            (Some((chain, _)), Some((key, _))) => Ok(Pulled::New(Unit { version, chain, key })),
            _ => Err(self
                .err(format!("{name}/current names {version}, which is incomplete"))(
                object_store::Error::NotFound {
                    path: format!("{name}/{version}"),
                    source: "missing object".into(),
                },
            )),
        }
    }

    /// Checks that the storage enforces conditional writes, which the lease relies on: a
    /// second create of one object and an update under a stale ETag must both be refused
    /// (S3 since 2024, MinIO, moto do; a store that ignores the headers would let two
    /// instances hold a lease). Run once per client, on a probe object of this process.
    pub async fn check_conditional_writes(&self) -> Result<(), String> {
        self.probed
            .get_or_init(|| async { self.probe().await.map_err(|e| crate::error_chain(&e)) })
            .await
            .clone()
    }

    async fn probe(&self) -> Result<(), RemoteError> {
        let rel = format!(
            ".probe/{}-{:016x}",
            owner_id().replace(':', "-"),
            rand::random::<u64>()
        );
        let what = "conditional write probe";
        let _ = self.store.delete(&self.path(&rel)).await;
        self.put(&rel, b"1".to_vec(), PutMode::Create)
            .await
            .map_err(self.err(format!("{what}: cannot create {rel}")))?;
        let second = self.put(&rel, b"2".to_vec(), PutMode::Create).await;
        let stale = self
            .put(
                &rel,
                b"3".to_vec(),
                PutMode::Update(UpdateVersion {
                    e_tag: Some("\"00000000000000000000000000000000\"".into()),
                    version: None,
                }),
            )
            .await;
        let _ = self.store.delete(&self.path(&rel)).await;
        let refused = |r: &Result<UpdateVersion, object_store::Error>| {
            matches!(
                r,
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })
            )
        };
        if refused(&second) && refused(&stale) {
            return Ok(());
        }
        let which = if refused(&second) {
            "If-Match"
        } else {
            "If-None-Match: *"
        };
        Err(RemoteError::Remote {
            what: format!("the object storage does not enforce conditional writes ({which} on PutObject was ignored), so two instances could both hold a certificate's lease: no certificate is ordered through it; use a storage that does (AWS S3, MinIO) or a shared directory"),
            url: self.url.clone(),
            source: object_store::Error::NotImplemented {
                operation: "conditional PutObject".into(),
                implementer: "this storage".into(),
            },
        })
    }

    /// Publishes an HTTP-01 key authorization for every instance.
    pub async fn put_challenge(&self, token: &str, key_authorization: &str) -> Result<(), RemoteError> {
        let rel = format!(".challenges/{token}");
        self.put(&rel, key_authorization.as_bytes().to_vec(), PutMode::Overwrite)
            .await
            .map(|_| ())
            .map_err(self.err(format!("cannot write {rel}")))
    }

    pub async fn delete_challenge(&self, token: &str) -> Result<(), RemoteError> {
        let rel = format!(".challenges/{token}");
        match self.store.delete(&self.path(&rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(format!("cannot delete {rel}"))(e)),
        }
    }

    /// The key authorization of `token` published by any instance.
    pub async fn challenge(&self, token: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        Ok(self.get(&format!(".challenges/{token}")).await?.map(|(b, _)| b))
    }

    /// The lease of `name` as stored.
    pub async fn lease(&self, name: &str) -> Result<Option<(Record, UpdateVersion)>, RemoteError> {
        let rel = format!("{name}/lease.json");
        let Some((bytes, version)) = self.get(&rel).await? else {
            return Ok(None);
        };
        // A record that does not parse counts as lapsed: it is replaced under If-Match.
        let record = serde_json::from_slice(&bytes).unwrap_or_else(|_| Record::lapsed());
        Ok(Some((record, version)))
    }

    /// Takes the lease of `name` if it is free (absent, released or lapsed), renews it if
    /// the keeper `nonce` of this process holds it.
    pub async fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        nonce: u64,
    ) -> Result<RemoteAcquired, RemoteError> {
        let now = now_ms();
        let found = self.lease(name).await?;
        let since = match &found {
            Some((r, _)) if r.is_ours(nonce, now) => r.since,
            Some((r, _)) if !r.is_free(now) => return Ok(RemoteAcquired::Taken(r.clone())),
            _ => now,
        };
        let record = Record::mine(since, now + ttl.as_millis() as u64, nonce);
        let mode = match found {
            Some((_, v)) => PutMode::Update(v),
            None => PutMode::Create,
        };
        let rel = format!("{name}/lease.json");
        let body = serde_json::to_vec(&record).unwrap_or_default();
        match self.put(&rel, body, mode).await {
            Ok(v) => Ok(RemoteAcquired::Held(RemoteLease {
                name: name.to_owned(),
                record,
                e_tag: v.e_tag,
                version: v.version,
            })),
            Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                let holder = self.lease(name).await?.map(|(r, _)| r);
                Ok(RemoteAcquired::Taken(holder.unwrap_or(record)))
            }
            Err(e) => Err(self.err(format!("cannot write {rel}"))(e)),
        }
    }

    /// Extends `lease` to `ttl` from now (`expires` 0: releases it); `false` when another
    /// instance replaced the object meanwhile.
    pub async fn renew(&self, lease: &mut RemoteLease, ttl: Option<Duration>) -> Result<bool, RemoteError> {
        let record = Record {
            expires: ttl.map_or(0, |t| now_ms() + t.as_millis() as u64),
            ..lease.record.clone()
        };
        let rel = format!("{}/lease.json", lease.name);
        let mode = PutMode::Update(UpdateVersion {
            e_tag: lease.e_tag.clone(),
            version: lease.version.clone(),
        });
        match self
            .put(&rel, serde_json::to_vec(&record).unwrap_or_default(), mode)
            .await
        {
            Ok(v) => {
                lease.record = record;
                lease.e_tag = v.e_tag;
                lease.version = v.version;
                Ok(true)
            }
            Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(format!("cannot write {rel}"))(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn s3_urls_name_a_bucket_and_a_prefix() {
        assert_eq!(parse_url("s3://b/p/q/"), Some(("b", "p/q")));
        assert_eq!(parse_url("s3://b"), Some(("b", "")));
        assert_eq!(parse_url("s3:///p"), None);
        assert_eq!(parse_url("/var/lib/gateway"), None);
    }
}

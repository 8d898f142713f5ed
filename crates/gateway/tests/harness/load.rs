//! A bounded load loop on loopback that counts failures.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Tally {
    pub ok: AtomicUsize,
    pub failed: AtomicUsize,
    /// Failures to connect (refused, reset during the handshake...), also in `failed`.
    pub refused: AtomicUsize,
    pub errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Tally {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// `workers` loops of GET `url` (HTTP/1.1 and h2 alternately), at most `limit` requests each,
/// until stopped. A request fails on any error or a status other than 200.
pub fn start(url: String, workers: usize, limit: usize) -> (Arc<Tally>, Vec<tokio::task::JoinHandle<()>>) {
    start_with(url, workers, limit, false)
}

/// As [`start`]; with `fresh`, every request opens a new connection ([`super::client::fresh`]),
/// so a listening socket that stops accepting shows as refused connections at once.
pub fn start_with(
    url: String,
    workers: usize,
    limit: usize,
    fresh: bool,
) -> (Arc<Tally>, Vec<tokio::task::JoinHandle<()>>) {
    let tally = Arc::new(Tally::default());
    let handles = (0..workers)
        .map(|w| {
            let t = tally.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let h2 = w % 2 == 1;
                let client = if fresh {
                    super::client::fresh(h2)
                } else {
                    super::client::http(h2)
                };
                for _ in 0..limit {
                    if t.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.bytes().await;
                            t.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => {
                            t.failed.fetch_add(1, Ordering::SeqCst);
                            t.errors.lock().unwrap().push(format!("status {}", r.status()));
                        }
                        Err(e) => {
                            t.failed.fetch_add(1, Ordering::SeqCst);
                            if e.is_connect() {
                                t.refused.fetch_add(1, Ordering::SeqCst);
                            }
                            t.errors.lock().unwrap().push(format!("{e:?}"));
                        }
                    }
                }
            })
        })
        .collect();
    (tally, handles)
}

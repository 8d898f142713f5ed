//! vendor/rustls/PATCHED.md: `ConnectionCommon::release_empty_buffers` gives the heap back
//! (OpenSSL's `SSL_MODE_RELEASE_BUFFERS`, which nginx uses). A real rustls server and client
//! handshake and exchange a request and a response in memory; then the server reads from a
//! socket that has nothing (`WouldBlock`), as a keep-alive connection does between
//! requests: that read keeps its 4 KiB buffer (a busy connection pays nothing), and
//! `release_empty_buffers` frees it, as a counting allocator shows.

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConnection, ServerConnection};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::io::{self, Read, Write};
use std::sync::Arc;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The counts are process-wide: the tests of this file run one at a time, so that one's
/// allocations never land in another's measured region.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// rustls sizes its receive buffer to 4 KiB before each read.
const RECEIVE_BUFFER: isize = 4096;

/// A socket with nothing to read.
struct Idle;

impl Read for Idle {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

fn pair() -> (ServerConnection, ClientConnection) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    // The client trusts the self-signed certificate itself.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = ServerConnection::new(Arc::new(server)).unwrap();
    let client = ClientConnection::new(Arc::new(client), ServerName::try_from("localhost").unwrap()).unwrap();
    (server, client)
}

/// Runs the handshake, then one request and its response, over in-memory "sockets".
fn exchange(server: &mut ServerConnection, client: &mut ClientConnection) {
    let to_server = |s: &mut ServerConnection, bytes: &[u8]| {
        s.read_tls(&mut &bytes[..]).unwrap();
        s.process_new_packets().unwrap();
    };
    let to_client = |c: &mut ClientConnection, bytes: &[u8]| {
        c.read_tls(&mut &bytes[..]).unwrap();
        c.process_new_packets().unwrap();
    };
    for _ in 0..10 {
        if !server.is_handshaking() && !client.is_handshaking() {
            break;
        }
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        if !wire.is_empty() {
            to_server(server, &wire);
        }
        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        if !wire.is_empty() {
            to_client(client, &wire);
        }
    }
    assert!(
        !server.is_handshaking() && !client.is_handshaking(),
        "handshake done"
    );
    client
        .writer()
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    to_server(server, &wire);
    let mut request = [0u8; 64];
    let n = server.reader().read(&mut request).unwrap();
    assert!(request[..n].starts_with(b"GET / "));
    server
        .writer()
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    let mut wire = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut wire).unwrap();
    }
    to_client(client, &wire);
}

#[test]
fn an_idle_connection_gives_its_receive_buffer_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut server, mut client) = pair();
    exchange(&mut server, &mut client);
    // The keep-alive wait: the server reads, the socket has nothing; the buffer stays.
    let region = Region::new(GLOBAL);
    let err = server.read_tls(&mut Idle).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let change = region.change();
    let held = change.bytes_allocated as isize - change.bytes_deallocated as isize + change.bytes_reallocated;
    assert!(
        held >= 0,
        "a read keeps its buffer; heap change: {held} bytes ({change:?})"
    );
    // Idle for a while: the caller frees the empty buffers.
    let region = Region::new(GLOBAL);
    let freed = server.release_empty_buffers();
    let change = region.change();
    let held = change.bytes_allocated as isize - change.bytes_deallocated as isize + change.bytes_reallocated;
    assert!(
        held <= -RECEIVE_BUFFER && freed as isize >= RECEIVE_BUFFER && freed as isize == -held,
        "the {RECEIVE_BUFFER}-byte receive buffer should be given back and counted; said {freed}, heap change: {held} bytes ({change:?})"
    );
    assert_eq!(server.release_empty_buffers(), 0, "nothing left to free");
    // Still idle: a read that finds nothing does not allocate the buffer again.
    let region = Region::new(GLOBAL);
    let err = server.read_tls(&mut Idle).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let change = region.change();
    assert_eq!(
        change.bytes_allocated, 0,
        "an empty read after the release allocates nothing ({change:?})"
    );
    // The next request is read into a new buffer.
    client.writer().write_all(b"GET /next HTTP/1.1\r\n\r\n").unwrap();
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    server.read_tls(&mut &wire[..]).unwrap();
    server.process_new_packets().unwrap();
    let mut request = [0u8; 64];
    let n = server.reader().read(&mut request).unwrap();
    assert!(request[..n].starts_with(b"GET /next "));
}

#[test]
fn a_partial_record_is_kept() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut server, mut client) = pair();
    exchange(&mut server, &mut client);
    client.writer().write_all(b"GET /half HTTP/1.1\r\n\r\n").unwrap();
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    // Half a record arrives, then the connection waits for the rest.
    let half = wire.len() / 2;
    server.read_tls(&mut &wire[..half]).unwrap();
    server.process_new_packets().unwrap();
    let freed = server.release_empty_buffers();
    assert!(
        freed < RECEIVE_BUFFER as usize,
        "the receive buffer holds half a record: kept (freed {freed})"
    );
    server.read_tls(&mut &wire[half..]).unwrap();
    server.process_new_packets().unwrap();
    let mut request = [0u8; 64];
    let n = server.reader().read(&mut request).unwrap();
    assert!(request[..n].starts_with(b"GET /half "));
}

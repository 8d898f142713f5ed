//! The reference point for the side-by-side benchmark: Pingora's stock HTTP proxy with the
//! least a proxy can do (pick the upstream, keep `Host`), TLS from PEM files, Pingora's
//! default server settings with 2 threads. `benches/compare.py --bare` runs it as a third
//! column, so the gateway's own cost over Pingora is measured in the same run.
//!
//! Usage: bare-pingora <listen> <upstream> <cert.pem> <key.pem>

use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> pingora_error::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, cert, key] = args.as_slice() else {
        eprintln!("usage: bare-pingora <listen> <upstream> <cert.pem> <key.pem>");
        std::process::exit(2);
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let conf = ServerConf {
        threads: 2,
        upstream_keepalive_pool_size: 32,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream: upstream.clone(),
        },
    );
    let mut tls = TlsSettings::intermediate(cert, key).expect("certificate and key");
    tls.enable_h2();
    proxy.add_tls_with_settings(listen, None, tls);
    server.add_service(proxy);
    server.run_forever();
}

//! `gateway import-nginx` against nginx itself: for every configuration of the corpus, the
//! imported `proxy.toml` must send each request to the same upstream with the same
//! request-target as nginx 1.22 running the original file.
//!
//! For each file the test imports the original ([`gateway_nginx_import::import`]), parses
//! the result as `gateway check` does (`gateway_config::parse`; certificates with
//! `if_missing = "self-signed"` need no files) and builds the gateway's route table
//! (`RouteTable::new`, as `crates/routing/tests/nginx_oracle.rs` does). It starts nginx
//! (Debian's `nginx-light`) in the foreground on the file rewritten for loopback (below),
//! every upstream a recording server (a tiny HTTP/1.1 server that answers 200 with
//! `X-Upstream: <the nginx upstream's name>` and the request-target it received as the
//! body; `support.rs`), and sends each request with its `Host` and Basic credentials. Then,
//! for each request (`judge.rs`):
//!
//! - nginx answered 400 ⇔ `RouteTable::decide` says `BadRequest`; 404 ⇔ `NotFound`;
//! - nginx answered 301 or 302 ⇔ `Redirect` with the same path and query (nginx's
//!   `Location` is absolute);
//! - nginx proxied ⇔ `Forward` on the route the importer made of that `location` (same path
//!   match, a host from its `server_name`s), to the same upstream (the importer keeps the
//!   names of `upstream` blocks; an upstream it made for `proxy_pass http://host:port` is
//!   mapped back by its address), with the same request-target byte for byte, except for
//!   the exceptions below.
//!
//! On the plain-HTTP port nginx's servers `return 301 https://$host$request_uri`; the
//! gateway's `:80` listener redirects every request (but ACME challenges) to `https://`,
//! the host without its port, and the target as received (`crates/proxy/src/redirect.rs`):
//! targets made of bytes every parser in front of it takes are sent there too.
//!
//! # The normalizing twin
//!
//! A second nginx runs the same rewritten file with two changes, and is asked every request
//! too: a `proxy_pass` without URI part gets the location's path as URI part (which makes
//! nginx send its normalized, re-escaped `$uri` instead of the client's bytes, and changes
//! nothing else), and a prefix location without trailing slash (`location /api`) becomes
//! `location = /api` and `location /api/` (with `/` appended to its URI part), which is the
//! gateway's prefix: `/api` and `/api/...`, not `/apix`. The gateway is compared with the
//! twin; nginx with its twin may differ only as RawTarget and SegmentBoundary say.
//!
//! # Rewrites of the original file (`conf.rs`)
//!
//! - A file without `http` (nginx-cloud.conf, a `conf.d/` fragment) is put in `http { }`;
//!   `events { worker_connections 256; }` is added where there is none.
//! - `daemon off; master_process off; worker_processes 1;` and `pid`, `error_log` in the
//!   temporary directory replace `user`, `worker_processes`, `pid`, `daemon`,
//!   `master_process`; `access_log` and `error_log` are removed everywhere and
//!   `access_log off;` set in `http`, with the `*_temp_path`s in the temporary directory.
//! - Every `listen` becomes `listen 127.0.0.1:PORT`: one port for the `ssl` listeners (and
//!   those of a server with `ssl on`), another for the others; `ssl`, `http2`, `ipv6only=`
//!   and `reuseport` go; `default_server` stays (on the first server that asks, per port);
//!   a server's IPv4 and IPv6 listeners become one; a server without `listen` gets nginx's
//!   `*:80`, the plain port.
//! - `ssl_*` directives, `ssl` and `http2` are removed (no listener speaks TLS).
//! - Each `server` line of an `upstream NAME` block points at the recorder named NAME (one
//!   per group: the test checks which group, not which server); weight, backup and
//!   max_fails stay, `resolve` (NGINX Plus in 1.22) goes. A `proxy_pass http://host:port`
//!   (port 80 when none) that names no block points at the recorder named `host:port`;
//!   the URI part is kept as written.
//! - Each proxied location gets `proxy_set_header X-Oracle-Location L<n>;` (it names the
//!   location to the recorder; only headers change, not the target).
//! - `include` is removed unless it names an existing `mime.types` (certbot's
//!   `options-ssl-nginx.conf` holds `ssl_*` settings); `auth_basic_user_file` is made
//!   absolute against the original's directory (nginx's prefix).
//! - Comments are dropped. `location`, `server_name`, `return` and every other directive
//!   are written as they are: they are what is compared.
//!
//! # Differences (named exceptions, each counted, reported and bounded)
//!
//! The routing oracle's four, with the same reasons (README.md, "Routing rules"):
//!
//! - [`Exception::RawTarget`]: on a location whose `proxy_pass` has no URI part, nginx
//!   forwards the client's target unchanged (`/a/./b/../c%41`); the gateway always forwards
//!   the normalized path, re-encoded (`/a/cA`). The twin must then agree with the gateway.
//! - [`Exception::Escaping`]: the same bytes, escaped differently. nginx re-escapes the
//!   normalized path only when the client's target held a `%`, never `[` `]`; the gateway
//!   percent-encodes every byte outside RFC 3986 `pchar`. Paths are compared after decoding
//!   every escape but `%2F`; queries byte for byte.
//! - [`Exception::SegmentBoundary`]: nginx's `location /api` also takes `/apix` and
//!   `/api.json`; the importer's `prefix = "/api"` matches at segment boundaries only (it
//!   says so above the route). The twin, whose `/api` is split as above, must then agree
//!   with the gateway.
//! - [`Exception::EmptyQuery`]: `?` directly followed by a `#` fragment: nginx drops the
//!   empty query, the gateway forwards `?`.
//!
//! The importer's own, deliberate:
//!
//! - [`Exception::DoubleSlash`]: `location /old { proxy_pass http://legacy/new/; }`: nginx
//!   replaces `/old` by `/new/` and sends `/old/x` as `/new//x`; the importer writes
//!   `rewrite = "/new/"` and the gateway joins `/new/` and `/x` with one slash (`/new/x`;
//!   the importer notes it above the route). Checked: nginx's path is the gateway's with
//!   that one slash doubled.
//! - [`Exception::DefaultServer`]: a `Host` no `server_name` lists goes to nginx's default
//!   server of the port (`default_server`, else the first); the gateway has no default
//!   server: its routes carry their server's names, so such a host gets the host-less
//!   routes (those of `server_name _`) or 404. Counted only when that default server has
//!   names, never for a request nginx refused, and never when the gateway refuses it.
//! - [`Exception::PlainHttpRefusal`]: on the plain-HTTP port nginx parses the target and
//!   answers 400 to a malformed one (`/../x`, `%00`) even where it would only redirect; the
//!   gateway's `:80` listener redirects without parsing, and the HTTPS request that follows
//!   gets the 400 (`decide` says `BadRequest`, which is checked).
//!
//! Anything else fails the test with the request, nginx's, the twin's and the gateway's
//! answers. The report prints, per file, the agreements, each exception with its count and
//! first example, and the importer's notes.
//!
//! Requests: for each name of the HTTPS servers (a wildcard as two names under it) and one
//! no server lists, every location path with and without its trailing slash, below it,
//! with a query, and its neighbours (`/apix`, `/api.json`); then seeded targets (SplitMix64;
//! the seed is printed, `NGINX_ORACLE_SEED=<n>` replays a run, `NGINX_EQUIVALENCE_TARGETS`
//! changes their count, 400 by default and never under 300) that start from the location
//! paths (plain, encoded, with dot segments, another case) and go on like the routing
//! oracle's: dot segments plain and encoded, `%2F`, `%41`, invalid escapes, `//`, `;`,
//! backslashes, non-ASCII, long paths, queries, fragments. One `Host` in eight is in upper
//! case, has a port or a trailing dot.
//!
//! Not covered: what reaches `decide` in the proxy (its HTTP parsers may refuse or rewrite
//! targets nginx accepts), `auth_basic` itself (every request carries valid credentials for
//! `tests/data/corpus/htpasswd`, so nginx's 401 is never compared), headers, timeouts.
//!
//! Without nginx the test fails, never passes silently: `apt-get install nginx-light`, or
//! set `NGINX=/path/to/nginx`.

#[path = "equivalence/conf.rs"]
mod conf;
#[path = "equivalence/judge.rs"]
mod judge;
#[path = "equivalence/support.rs"]
mod support;
#[path = "equivalence/targets.rs"]
mod targets;

use conf::{Env, Site, UNKNOWN_HOST};
use gateway_routing::RouteTable;
use judge::{answer, Case, Ctx, Exception, Tally};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use support::{temp_modules, Client, NginxProcess, Recorder, Slot, AUTHORIZATION};
use targets::{host_variant, plain_safe, systematic, Generator, SplitMix64};

/// The files compared, under `tests/data/`: the two reference files, then the corpus.
const CORPUS: &[&str] = &[
    "nginx.conf",
    "nginx-cloud.conf",
    "corpus/vhosts.conf",
    "corpus/upstreams.conf",
    "corpus/auth.conf",
];
/// Generated targets per file unless `NGINX_EQUIVALENCE_TARGETS` says otherwise.
const DEFAULT_TARGETS: usize = 400;
/// Requests per file at the least (the systematic ones come on top).
const MIN_TARGETS: usize = 300;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn seed() -> u64 {
    std::env::var("NGINX_ORACLE_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// FNV-1a: each file's targets come from its own stream of the one seed.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The requests of a file: (Host, target).
fn requests(site: &Site, rng: &mut SplitMix64, count: usize) -> Vec<(String, String)> {
    let paths = site.paths();
    let hosts = site.hosts();
    let named: Vec<&str> = hosts
        .iter()
        .map(String::as_str)
        .filter(|h| *h != UNKNOWN_HOST)
        .collect();
    let mut out = Vec::new();
    for h in &hosts {
        for t in systematic(&paths) {
            out.push((h.clone(), t));
        }
    }
    let generator = Generator::new(&paths);
    for i in 0..count {
        let name = if named.is_empty() || rng.chance(1, 8) {
            UNKNOWN_HOST
        } else {
            named[i % named.len()]
        };
        let host = host_variant(rng, name);
        out.push((host, generator.target(rng)));
    }
    out
}

fn compare(name: &str) {
    let path = data().join(name);
    let src_dir = path.parent().expect("the file's directory").to_path_buf();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));

    // The gateway: the original file imported, then read as `gateway check` reads it.
    let import = gateway_nginx_import::import(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let stem = path.file_stem().map_or("nginx".into(), |s| s.to_string_lossy());
    let toml_path = src_dir.join(format!("{stem}.proxy.toml"));
    let cfg = gateway_config::parse(&import.toml, &toml_path, &|_| None).unwrap_or_else(|e| {
        panic!(
            "{name}: the imported proxy.toml is refused:\n{e}\n--- proxy.toml\n{}",
            import.toml
        )
    });
    let table = RouteTable::new(&cfg.routes);

    // nginx: the file rewritten for loopback, and its normalizing twin.
    let tree = conf::parse(&text);
    let site = Site::read(&tree);
    assert!(
        site.default_tls.is_some(),
        "{name}: no HTTPS server, nothing to compare"
    );
    let recorders: Vec<Recorder> = site
        .recorders
        .iter()
        .map(|n| Recorder::start(n.as_str()))
        .collect();
    let addrs: BTreeMap<String, SocketAddr> = recorders.iter().map(|r| (r.name.clone(), r.addr)).collect();
    let plain = site.servers.iter().any(|s| s.plain);
    let start = |twin: bool| {
        let label = if twin {
            format!("{name}, normalizing twin")
        } else {
            name.to_string()
        };
        NginxProcess::start(&label, plain, &|slot: &Slot<'_>| {
            let modules = temp_modules(slot.build);
            let env = Env {
                dir: slot.dir,
                src_dir: &src_dir,
                http_port: slot.http_port,
                https_port: slot.https_port,
                recorders: &addrs,
                temp_modules: &modules,
                twin,
            };
            conf::rewrite(&tree, &site, &env)
        })
    };
    let nginx = start(false);
    let twin = start(true);
    // The readiness probes may have reached recorders: count from here.
    let before: Vec<usize> = recorders.iter().map(Recorder::seen).collect();

    let seed = seed();
    let count = std::env::var("NGINX_EQUIVALENCE_TARGETS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(DEFAULT_TARGETS)
        .max(MIN_TARGETS);
    let mut rng = SplitMix64(seed ^ fnv1a(name));
    let cases = requests(&site, &mut rng, count);

    let started = Instant::now();
    let ctx = Ctx {
        site: &site,
        cfg: &cfg,
    };
    let credentials = format!("Authorization: {AUTHORIZATION}");
    let mut to_nginx = Client::with_header(nginx.https, &credentials);
    let mut to_twin = Client::with_header(twin.https, &credentials);
    let mut to_plain = Client::with_header(nginx.http, &credentials);
    let mut tally = Tally::default();
    for (host, target) in &cases {
        let raw = answer(&to_nginx.get(host, target));
        let normalized = answer(&to_twin.get(host, target));
        let decision = table.decide(Some(host.as_str()), target);
        let case = Case {
            host,
            target,
            nginx: &raw,
            twin: &normalized,
        };
        tally.record(&ctx, &case, &decision);
        if plain && plain_safe(target) {
            let answered = answer(&to_plain.get(host, target));
            tally.record_plain(&ctx, host, target, &answered, &decision);
        }
    }

    let mut notes = String::new();
    for n in &import.notes {
        notes += &format!("    {n}\n");
    }
    let report = format!(
        "nginx equivalence of {name}: {}; seed {seed} (NGINX_ORACLE_SEED={seed} replays it); \
         {} requests over HTTPS and {} over plain HTTP in {:.1} s; {} routes, {} upstreams\n\
         {}  the importer's notes ({}):\n{notes}",
        nginx.version,
        tally.cases,
        tally.plain,
        started.elapsed().as_secs_f64(),
        cfg.routes.len(),
        cfg.upstreams.len(),
        tally.report(),
        import.notes.len(),
    );
    println!("{report}");

    assert!(
        tally.failures.is_empty(),
        "{name}: differences no exception explains:\n{report}"
    );
    for e in Exception::ALL {
        assert!(
            tally.share(e) <= e.max_share(),
            "{name}: exception {e:?} explains {} requests, more than its bound:\n{report}",
            tally.count(e)
        );
    }
    // Not vacuous: enough requests, most agreeing exactly with the twin, every kind of
    // answer and every proxied location compared.
    assert!(tally.cases >= MIN_TARGETS, "{name}: {} requests", tally.cases);
    assert!(
        tally.gateway_exact as f64 >= 0.5 * tally.cases as f64,
        "{name}: too few exact agreements:\n{report}"
    );
    assert!(tally.refused > 0, "{name}: no 400 compared:\n{report}");
    let slash_redirects = site
        .locations
        .iter()
        .any(|l| site.servers[l.server].tls && !l.exact && l.path.len() > 1 && l.path.ends_with('/'));
    assert!(
        !slash_redirects || tally.redirected > 0,
        "{name}: no slash redirect compared:\n{report}"
    );
    for l in site.locations.iter().filter(|l| site.servers[l.server].tls) {
        assert!(
            tally.forwarded.get(&l.id).is_some_and(|&n| n > 0),
            "{name}: {} ({}) never forwarded in agreement with nginx:\n{report}",
            l.text,
            l.id
        );
    }
    assert!(
        !plain || tally.plain >= 30,
        "{name}: only {} plain-HTTP requests compared:\n{report}",
        tally.plain
    );
    // The recorders saw exactly the requests nginx says it proxied to them.
    for (r, before) in recorders.iter().zip(before) {
        let answered = tally.answered.get(&r.name).copied().unwrap_or(0);
        assert_eq!(
            r.seen() - before,
            answered,
            "{name}: requests recorded by upstream {}",
            r.name
        );
    }
}

#[test]
fn reference_nginx_conf() {
    compare(CORPUS[0]);
}

#[test]
fn reference_nginx_cloud_conf() {
    compare(CORPUS[1]);
}

#[test]
fn corpus_virtual_hosts() {
    compare(CORPUS[2]);
}

#[test]
fn corpus_upstream_groups_and_locations() {
    compare(CORPUS[3]);
}

#[test]
fn corpus_basic_auth() {
    compare(CORPUS[4]);
}

/// A file added to `tests/data/corpus/` is compared too.
#[test]
fn every_corpus_file_is_compared() {
    let dir = data().join("corpus");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conf"))
        .map(|n| format!("corpus/{n}"))
        .collect();
    found.sort();
    assert!(found.len() >= 3, "the corpus: {found:?}");
    for f in &found {
        assert!(
            CORPUS.contains(&f.as_str()),
            "{f} is not compared: add it to CORPUS and give it a #[test]"
        );
    }
}

/// Without nginx: the rewrite keeps what is compared (the words of every `location`,
/// `server_name` and `return`, the URI part of every `proxy_pass`) and leaves no TLS.
#[test]
fn the_rewrite_keeps_what_is_compared() {
    for name in CORPUS {
        let path = data().join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let tree = conf::parse(&text);
        let site = Site::read(&tree);
        let addrs: BTreeMap<String, SocketAddr> = site
            .recorders
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), SocketAddr::from(([127, 0, 0, 1], 20000 + i as u16))))
            .collect();
        for twin in [false, true] {
            let env = Env {
                dir: Path::new("/nonexistent/equivalence"),
                src_dir: path.parent().expect("a directory"),
                http_port: 18080,
                https_port: 18443,
                recorders: &addrs,
                temp_modules: &["client_body", "proxy"],
                twin,
            };
            let out = conf::parse(&conf::rewrite(&tree, &site, &env));
            for d in ["server_name", "return"] {
                assert_eq!(conf::collect(&tree, d), conf::collect(&out, d), "{name}: {d}");
            }
            let uris = |t: &[conf::Node]| -> Vec<String> {
                conf::collect(t, "proxy_pass")
                    .iter()
                    .map(|w| conf::uri_part(&conf::unquote(&w[1])).to_string())
                    .collect()
            };
            let listens = conf::collect(&out, "listen");
            assert!(
                listens
                    .iter()
                    .all(|w| w[1] == "127.0.0.1:18080" || w[1] == "127.0.0.1:18443"),
                "{name}: {listens:?}"
            );
            assert!(
                conf::collect(&out, "ssl_certificate").is_empty(),
                "{name}: ssl_* left"
            );
            if !twin {
                let locations = (conf::collect(&tree, "location"), conf::collect(&out, "location"));
                assert_eq!(locations.0, locations.1, "{name}: locations");
                assert_eq!(uris(&tree), uris(&out), "{name}: proxy_pass URI parts");
            }
        }
    }
}

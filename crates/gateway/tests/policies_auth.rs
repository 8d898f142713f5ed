//! Edge policies `basic_auth` and `forward_auth` (issue 20, items 1 and 2) against the real
//! gateway, real upstreams and a real auth server written here, over HTTP/1.1 and HTTP/2:
//! 401 with the challenge, bcrypt and argon2id users, `Authorization` removed unless
//! `forward_authorization`, `$remote_user` in the access log, a WebSocket upgrade behind
//! basic auth, a protected prefix with an open sub-route, an htpasswd file changed and
//! reloaded (by `gateway reload` and by the file watcher) without the cache serving the old
//! password, verification off the event loop with successful ones cached and unknown users
//! paying a verification too; forward auth passing with the answer's `copy_headers` (the
//! client's spoofed copies removed), the auth service's redirect passed back whole, the
//! auth request's forwarded headers, and 503 for a service that is down, stopped, hung or
//! answering garbage.

mod harness;

use futures_util::{SinkExt, StreamExt};
use harness::auth_server::{garbage_server, AuthServer, LOGIN, LOGIN_BODY};
use harness::gateway::Gateway;
use harness::scrape::scrape;
use harness::upstream::{self, Seen};
use harness::{client, poll_until, within};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEP: Duration = Duration::from_secs(10);
const DENIED: &str = "gateway_requests_denied_total";

/// The timing test runs alone (write); the others share (read), so their gateways starting
/// do not take the CPU its bounds are measured on.
static SERIAL: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Listeners, access log, upstreams `echo` (and `ws`), then `rest` (policies and routes).
fn config(rest: &str, up: SocketAddr, ws: Option<SocketAddr>, watch: bool) -> String {
    let ws = ws.map_or_else(String::new, |a| format!("[upstreams.ws]\naddress = \"{a}\"\n"));
    format!(
        r#"
[listen]
https = "{{HTTPS}}"
http = "{{HTTP}}"
metrics = "{{METRICS}}"
[server]
grace_period = "2s"
threads = 2
watch_config = {watch}
[logging]
access_log = "combined"
[upstreams.echo]
address = "{up}"
{ws}{rest}"#
    )
}

/// A bcrypt hash as `htpasswd -B` writes it (`$2y$`).
fn bcrypt_y(password: &str, cost: u32) -> String {
    bcrypt::hash_with_result(password, cost)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY)
}

/// An argon2id PHC string with small parameters (fast in a debug build).
fn argon2id(password: &str) -> String {
    use argon2::PasswordHasher;
    let params = argon2::Params::new(64, 1, 1, None).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(
            password.as_bytes(),
            argon2::password_hash::Salt::from_b64("c2FsdHNhbHRzYWx0c2FsdA").unwrap(),
        )
        .unwrap()
        .to_string()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// A GET with optional Basic credentials and extra headers: status, headers, body.
async fn get(
    c: &reqwest::Client,
    gw: &Gateway,
    path: &str,
    auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    client::get(c, gw, path, auth, headers).await
}

async fn status(c: &reqwest::Client, gw: &Gateway, path: &str, auth: Option<(&str, &str)>) -> u16 {
    get(c, gw, path, auth, &[]).await.0
}

/// What the upstream saw of the request marked `X-Mark: mark`.
fn seen(up: &upstream::Upstream, mark: &str) -> Seen {
    up.seen()
        .into_iter()
        .rfind(|s| s.header("x-mark") == Some(mark))
        .unwrap_or_else(|| panic!("the upstream never saw {mark}"))
}

fn values<'a>(s: &'a Seen, name: &str) -> Vec<&'a str> {
    s.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Replaces `gw.dir/htpasswd` in one rename (as editors and `htpasswd` do).
fn write_htpasswd(gw: &Gateway, text: &str) {
    let tmp = gw.dir.path().join("htpasswd.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, gw.dir.path().join("htpasswd")).unwrap();
}

/// Basic auth on `/admin/`, `/n8n/` (with an open `/n8n/webhook/`) and the WebSocket route
/// `/ws/` (users alice, `{ALICE}`, and bob, `{BOB}`), passed on upstream on `/backend/`
/// (alice only), and a catch-all.
fn basic_routes() -> String {
    let policies = r#"
[policies.admin]
basic_auth = { realm = "admin", users = ["alice:{ALICE}", "bob:{BOB}"] }
[policies.passthrough]
basic_auth = { realm = "backend", users = ["alice:{ALICE}"], forward_authorization = true }
"#;
    [
        policies.to_owned(),
        route("admin", "/admin/", "admin"),
        route("backend", "/backend/", "passthrough"),
        route("n8n", "/n8n/", "admin"),
        "[[routes]]\nname = \"n8n-webhook\"\nprefix = \"/n8n/webhook/\"\nupstream = \"echo\"\n".to_owned(),
        "[[routes]]\nname = \"ws\"\nprefix = \"/ws/\"\nupstream = \"ws\"\nwebsocket = true\npolicies = [\"admin\"]\n"
            .to_owned(),
        OPEN.to_owned(),
    ]
    .concat()
}

#[tokio::test]
async fn basic_auth_with_bcrypt_and_argon2id_on_h1_and_h2() {
    let _shared = SERIAL.read().await;
    let up = upstream::echo().await;
    let ws = upstream::ws_echo().await;
    let (alice, bob) = (bcrypt_y("alice-pw", 4), argon2id("bob-pw"));
    let rest = basic_routes().replace("{ALICE}", &alice).replace("{BOB}", &bob);
    let gw = Gateway::start(&config(&rest, up.addr, Some(ws.addr), false)).await;
    for h2 in [false, true] {
        let v = if h2 { "h2" } else { "h1" };
        let c = client::http(h2);
        let r = within(STEP, "a request", c.get(gw.url("/open")).send())
            .await
            .unwrap();
        let want = if h2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(r.version(), want, "{v}");

        let (s, h, body) = get(&c, &gw, "/admin/x", None, &[]).await;
        assert_eq!(s, 401, "{v}: no credentials");
        assert_eq!(
            h.get("www-authenticate").and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"admin\", charset=\"UTF-8\""),
            "{v}: RFC 7617 challenge"
        );
        for secret in ["alice", "bob", "$2y$", "argon2"] {
            assert!(!body.contains(secret), "{v}: the 401 page tells nothing: {body}");
        }
        let (s, h, _) = get(&c, &gw, "/admin/x", Some(("alice", "wrong")), &[]).await;
        assert_eq!(s, 401, "{v}: wrong password");
        assert!(h.contains_key("www-authenticate"), "{v}");
        assert_eq!(
            status(&c, &gw, "/admin/x", Some(("carol", "alice-pw"))).await,
            401,
            "{v}: unknown user"
        );
        assert_eq!(
            status(&c, &gw, "/admin/x", Some(("bob", "alice-pw"))).await,
            401,
            "{v}"
        );

        // bcrypt ($2y$) and argon2id; the upstream gets no Authorization.
        for (user, pw) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
            let mark = format!("{v}-{user}");
            let (s, _, body) = get(
                &c,
                &gw,
                "/admin/page",
                Some((user, pw)),
                &[("X-Mark", mark.as_str())],
            )
            .await;
            assert_eq!(s, 200, "{v}: {user}: {body}");
            let got = seen(&up, &mark);
            assert_eq!(
                values(&got, "authorization"),
                Vec::<&str>::new(),
                "{v}: {user}: {got:?}"
            );
        }
        // forward_authorization = true: it does.
        let mark = format!("{v}-passthrough");
        let (s, _, _) = get(
            &c,
            &gw,
            "/backend/x",
            Some(("alice", "alice-pw")),
            &[("X-Mark", mark.as_str())],
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            values(&seen(&up, &mark), "authorization"),
            vec![basic("alice", "alice-pw")],
            "{v}"
        );
        assert_eq!(
            status(&c, &gw, "/backend/x", Some(("bob", "bob-pw"))).await,
            401,
            "{v}: not in that realm"
        );

        // A protected prefix with an open sub-route (n8n's webhooks under a closed /n8n/).
        assert_eq!(
            status(&c, &gw, "/n8n/webhook/abc", None).await,
            200,
            "{v}: open webhook"
        );
        assert_eq!(status(&c, &gw, "/n8n/", None).await, 401, "{v}: closed editor");
        assert_eq!(
            status(&c, &gw, "/n8n/rest/x", Some(("alice", "alice-pw"))).await,
            200,
            "{v}"
        );
        // Routes without the policy are untouched, credentials or not.
        assert_eq!(status(&c, &gw, "/open", Some(("nobody", "x"))).await, 200, "{v}");

        // The verified user is the access log's $remote_user.
        let path = format!("/admin/logged-{v}");
        assert_eq!(status(&c, &gw, &path, Some(("alice", "alice-pw"))).await, 200);
        let line = gw.access_line(&path).await;
        assert!(line.starts_with("127.0.0.1 - alice ["), "{v}: {line}");
    }
    // The upstream never saw a refused request.
    assert!(
        up.seen().iter().all(|s| s.uri != "/admin/x" && s.uri != "/n8n/"),
        "{:?}",
        up.seen().iter().map(|s| &s.uri).collect::<Vec<_>>()
    );
    assert!(
        scrape(gw.metrics)
            .await
            .value(DENIED, &[("route", "admin"), ("reason", "auth")])
            >= 8.0
    );

    // A WebSocket upgrade: browsers send the credentials on the handshake.
    let url = format!("wss://localhost:{}/ws/socket", gw.https.port());
    let (tls, _) = client::tls(gw.https, "localhost").await;
    let err = within(
        STEP,
        "the refused handshake",
        tokio_tungstenite::client_async(url.clone(), tls),
    )
    .await
    .map(|_| ())
    .expect_err("upgraded without credentials");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status().as_u16(), 401);
            assert!(resp.headers().contains_key("www-authenticate"));
        }
        e => panic!("expected a 401, got {e}"),
    }
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&basic("bob", "bob-pw")).unwrap(),
    );
    let (tls, _) = client::tls(gw.https, "localhost").await;
    let (mut socket, resp) = within(STEP, "the handshake", tokio_tungstenite::client_async(req, tls))
        .await
        .expect("upgrade with credentials");
    assert_eq!(resp.status().as_u16(), 101);
    within(STEP, "sending", socket.send("hello".into()))
        .await
        .unwrap();
    let echoed = within(STEP, "the echo", socket.next()).await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap(), "hello");
}

fn file_config(gw_up: SocketAddr, with_policy: bool, watch: bool) -> String {
    let rest = if with_policy {
        r#"
[policies.admin]
basic_auth = { realm = "admin", htpasswd_file = "htpasswd" }
[[routes]]
name = "admin"
prefix = "/admin/"
upstream = "echo"
policies = ["admin"]
"#
    } else {
        ""
    };
    config(
        &format!("{rest}[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"echo\"\n"),
        gw_up,
        None,
        watch,
    )
}

/// An echo upstream and a gateway whose `/admin/` takes its users from the htpasswd file
/// `users` (next to proxy.toml, a relative `htpasswd_file`: written once the harness has
/// made that directory, the policy added after it).
async fn with_htpasswd(watch: bool, users: &str) -> (upstream::Upstream, Gateway) {
    let up = upstream::echo().await;
    let gw = Gateway::start(&file_config(up.addr, false, watch)).await;
    write_htpasswd(&gw, users);
    gw.write_config(&file_config(up.addr, true, watch));
    (up, gw)
}

#[tokio::test]
async fn an_htpasswd_file_changed_and_reloaded_takes_the_new_password_only() {
    let _shared = SERIAL.read().await;
    let (_up, gw) = with_htpasswd(false, &format!("# users\nalice:{}\n", bcrypt_y("old-pw", 4))).await;
    gw.reload().await;
    for h2 in [false, true] {
        let c = client::http(h2);
        assert_eq!(status(&c, &gw, "/admin/x", None).await, 401);
        // Twice: the second is answered from the cache.
        assert_eq!(status(&c, &gw, "/admin/x", Some(("alice", "old-pw"))).await, 200);
        assert_eq!(status(&c, &gw, "/admin/x", Some(("alice", "old-pw"))).await, 200);
    }
    write_htpasswd(
        &gw,
        &format!("alice:{}\ncarol:{}\n", bcrypt_y("new-pw", 4), argon2id("c-pw")),
    );
    gw.reload().await;
    for h2 in [false, true] {
        let c = client::http(h2);
        assert_eq!(
            status(&c, &gw, "/admin/x", Some(("alice", "old-pw"))).await,
            401,
            "the cached old password is not served after the entry changed"
        );
        assert_eq!(status(&c, &gw, "/admin/x", Some(("alice", "new-pw"))).await, 200);
        assert_eq!(status(&c, &gw, "/admin/x", Some(("carol", "c-pw"))).await, 200);
    }
    // A removed user is refused at once, cached or not.
    write_htpasswd(&gw, &format!("carol:{}\n", argon2id("c-pw")));
    gw.reload().await;
    let c = client::http(false);
    assert_eq!(status(&c, &gw, "/admin/x", Some(("alice", "new-pw"))).await, 401);
    assert_eq!(status(&c, &gw, "/admin/x", Some(("carol", "c-pw"))).await, 200);
}

/// The reloader watches the htpasswd file as it watches proxy.toml.
#[tokio::test]
async fn an_htpasswd_file_change_alone_is_picked_up_by_the_watcher() {
    let _shared = SERIAL.read().await;
    let (_up, gw) = with_htpasswd(true, &format!("alice:{}\n", bcrypt_y("old-pw", 4))).await;
    let c = client::http(false);
    // The file watcher's events are polled with a wide limit: under the suite's load a
    // debounced reload can take longer than one request step.
    poll_until(
        Duration::from_secs(30),
        "the policy from the changed proxy.toml",
        || {
            let (c, gw) = (&c, &gw);
            async move { (status(c, gw, "/admin/x", None).await == 401).then_some(()) }
        },
    )
    .await;
    assert_eq!(status(&c, &gw, "/admin/x", Some(("alice", "old-pw"))).await, 200);
    write_htpasswd(&gw, &format!("alice:{}\n", bcrypt_y("new-pw", 4)));
    poll_until(
        Duration::from_secs(30),
        "the new password from the changed htpasswd file",
        || {
            let (c, gw) = (&c, &gw);
            async move { (status(c, gw, "/admin/x", Some(("alice", "new-pw"))).await == 200).then_some(()) }
        },
    )
    .await;
    assert_eq!(status(&c, &gw, "/admin/x", Some(("alice", "old-pw"))).await, 401);
}

/// A bcrypt hash whose verification takes at least 300 ms in this build (debug or release:
/// the cost is raised until it does), and that time.
fn costly_hash(password: &str) -> (String, Duration) {
    let mut cost = 6;
    loop {
        let hash = bcrypt::hash(password, cost).unwrap();
        let t = Instant::now();
        assert!(!bcrypt::verify("not it", &hash).unwrap());
        let took = t.elapsed();
        if took >= Duration::from_millis(300) || cost >= 15 {
            return (hash, took);
        }
        cost += 1;
    }
}

async fn timed(c: &reqwest::Client, gw: &Gateway, path: &str, auth: Option<(&str, &str)>) -> (u16, Duration) {
    let t = Instant::now();
    let s = status(c, gw, path, auth).await;
    (s, t.elapsed())
}

/// Verification runs on the blocking pool: 20 concurrent wrong passwords against a costly
/// hash (each needing T of CPU) leave a plain request on another route far below T; done on
/// the worker threads, each of them would wait for the hashes ahead of it. Bounds are
/// relative to T as measured through this gateway, so a slow or fast machine changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_runs_off_the_event_loop_and_successes_are_cached() {
    let _alone = SERIAL.write().await;
    let (hash, local) = tokio::task::spawn_blocking(|| costly_hash("carol-pw"))
        .await
        .unwrap();
    let up = upstream::echo().await;
    let rest = format!(
        "[policies.heavy]\nbasic_auth = {{ realm = \"heavy\", users = [\"carol:{hash}\"] }}\n\
         [[routes]]\nname = \"heavy\"\nprefix = \"/heavy/\"\nupstream = \"echo\"\npolicies = [\"heavy\"]\n\
         [[routes]]\nname = \"plain\"\nprefix = \"/\"\nupstream = \"echo\"\n"
    );
    let gw = Gateway::start(&config(&rest, up.addr, None, false)).await;
    let c = client::http(false);
    assert_eq!(status(&c, &gw, "/warm", None).await, 200);
    let (s, wrong) = timed(&c, &gw, "/heavy/x", Some(("carol", "wrong"))).await;
    assert_eq!(s, 401);
    let (s, first) = timed(&c, &gw, "/heavy/x", Some(("carol", "carol-pw"))).await;
    assert_eq!(s, 200);
    let (s, cached) = timed(&c, &gw, "/heavy/x", Some(("carol", "carol-pw"))).await;
    assert_eq!(s, 200);
    println!(
        "one verification: {local:?} here, {wrong:?} through the gateway; \
         first login {first:?}, cached {cached:?}"
    );
    assert!(
        cached < wrong / 3,
        "a cached login costs no verification: {cached:?} vs {wrong:?}"
    );
    // An unknown user costs a verification too: timing does not tell which users exist.
    let (s, unknown) = timed(&c, &gw, "/heavy/x", Some(("mallory", "x"))).await;
    assert_eq!(s, 401);
    assert!(
        unknown >= wrong / 3,
        "unknown user answered in {unknown:?}, a wrong password in {wrong:?}"
    );

    // One connection per client, opened before the flood.
    let mut flood = Vec::new();
    for _ in 0..20 {
        let fc = client::http(false);
        assert_eq!(status(&fc, &gw, "/warm", None).await, 200);
        flood.push(fc);
    }
    let plain = client::http(false);
    assert_eq!(status(&plain, &gw, "/warm", None).await, 200);
    let done = Arc::new(AtomicUsize::new(0));
    let url = gw.url("/heavy/flood");
    let mut tasks = tokio::task::JoinSet::new();
    for fc in flood {
        let (done, url) = (done.clone(), url.clone());
        tasks.spawn(async move {
            let r = fc.get(url).basic_auth("carol", Some("wrong")).send().await;
            done.fetch_add(1, Ordering::SeqCst);
            r.map(|r| r.status().as_u16()).unwrap_or(0)
        });
    }
    let (mut worst, mut samples) = (Duration::ZERO, 0);
    within(Duration::from_secs(120), "the flood of wrong passwords", async {
        while done.load(Ordering::SeqCst) < 20 {
            let (s, took) = timed(&plain, &gw, "/plain", None).await;
            assert_eq!(s, 200);
            worst = worst.max(took);
            samples += 1;
        }
    })
    .await;
    let statuses: Vec<u16> = tasks.join_all().await;
    println!("plain requests during the flood: {samples}, slowest {worst:?}");
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert!(
        samples >= 3,
        "the flood ended before it could be measured ({samples} samples)"
    );
    assert!(
        worst < wrong / 2,
        "a plain request waited {worst:?} behind the verifications (one takes {wrong:?})"
    );
}

fn sso(name: &str, auth: SocketAddr, timeout: &str) -> String {
    format!(
        "[policies.{name}]\nforward_auth = {{ url = \"http://{auth}/api/verify\", \
         copy_headers = [\"Remote-User\"], timeout = \"{timeout}\" }}\n"
    )
}

fn route(name: &str, prefix: &str, policy: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nprefix = \"{prefix}\"\nupstream = \"echo\"\n\
         policies = [\"{policy}\"]\n"
    )
}

const OPEN: &str = "[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"echo\"\n";

#[tokio::test]
async fn forward_auth_passes_with_copied_headers_and_passes_the_redirect_back() {
    let _shared = SERIAL.read().await;
    let up = upstream::echo().await;
    let auth = AuthServer::start().await;
    let rest = format!(
        "{}{}{OPEN}",
        sso("sso", auth.addr, "2s"),
        route("app", "/app/", "sso")
    );
    let gw = Gateway::start(&config(&rest, up.addr, None, false)).await;
    for h2 in [false, true] {
        let v = if h2 { "h2" } else { "h1" };
        let c = client::http(h2);
        // Signed in: through, with the answer's Remote-User, never the client's own.
        let mark = format!("{v}-good");
        let path = format!("/app/page-{v}?q=1");
        let (s, _, body) = get(
            &c,
            &gw,
            &path,
            None,
            &[
                ("Cookie", "session=good"),
                ("Remote-User", "admin"),
                // CGI, WSGI and PHP read this as REMOTE_USER too.
                ("Remote_User", "admin"),
                ("X-Mark", mark.as_str()),
            ],
        )
        .await;
        assert_eq!(s, 200, "{v}: {body}");
        let got = seen(&up, &mark);
        assert_eq!(values(&got, "remote-user"), vec!["alice"], "{v}: {got:?}");
        assert_eq!(
            values(&got, "remote_user"),
            Vec::<&str>::new(),
            "{v}: the underscore spelling is removed too: {got:?}"
        );
        assert_eq!(
            values(&got, "remote-groups"),
            Vec::<&str>::new(),
            "{v}: not in copy_headers"
        );
        // What the auth service was asked.
        let asked = auth
            .seen()
            .into_iter()
            .find(|a| a.header("x-forwarded-uri") == Some(path.as_str()))
            .unwrap_or_else(|| panic!("{v}: the auth service never saw {path}: {:?}", auth.seen()));
        assert_eq!(
            (asked.method.as_str(), asked.uri.as_str()),
            ("GET", "/api/verify"),
            "{v}"
        );
        let host = format!("localhost:{}", gw.https.port());
        for (name, want) in [
            ("x-forwarded-method", "GET"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", host.as_str()),
            ("x-forwarded-for", "127.0.0.1"),
            ("cookie", "session=good"),
        ] {
            assert_eq!(asked.header(name), Some(want), "{v}: {name} in {asked:?}");
        }
        assert_eq!(
            asked.header("remote-user"),
            None,
            "{v}: the client's own is not sent"
        );

        // The original method is told; the request and its body go on.
        let mark = format!("{v}-post");
        let r = c
            .post(gw.url("/app/submit"))
            .header("Cookie", "session=good")
            .header("X-Mark", mark.as_str())
            .body("payload")
            .send();
        assert_eq!(within(STEP, "POST", r).await.unwrap().status(), 200, "{v}");
        assert_eq!(seen(&up, &mark).body_len, 7, "{v}");
        let asked = auth
            .seen()
            .into_iter()
            .rfind(|a| a.header("x-forwarded-uri") == Some("/app/submit"));
        assert_eq!(
            asked
                .and_then(|a| a.header("x-forwarded-method").map(str::to_owned))
                .as_deref(),
            Some("POST")
        );

        // A 2xx without the header: the client's spoofed copy is still removed.
        let mark = format!("{v}-anon");
        let (s, _, _) = get(
            &c,
            &gw,
            "/app/x",
            None,
            &[
                ("Cookie", "session=anon"),
                ("Remote-User", "admin"),
                ("X-Mark", mark.as_str()),
            ],
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            values(&seen(&up, &mark), "remote-user"),
            Vec::<&str>::new(),
            "{v}"
        );

        // Not signed in: the auth service's redirect, exactly.
        let mark = format!("{v}-login");
        let (s, h, body) = get(&c, &gw, "/app/x", None, &[("X-Mark", mark.as_str())]).await;
        assert_eq!(s, 302, "{v}: {body}");
        assert_eq!(
            h.get("location").and_then(|v| v.to_str().ok()),
            Some(LOGIN),
            "{v}"
        );
        let cookies: Vec<&str> = h
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(
            cookies,
            vec!["authelia_flow=1; Path=/; HttpOnly", "csrf=abc; Path=/; Secure"],
            "{v}: every Set-Cookie"
        );
        assert_eq!(
            h.get("content-type").and_then(|v| v.to_str().ok()),
            Some("text/html; charset=utf-8"),
            "{v}"
        );
        assert_eq!(body, LOGIN_BODY, "{v}");
        assert!(
            up.seen()
                .iter()
                .all(|s| s.header("x-mark") != Some(mark.as_str())),
            "{v}: not proxied"
        );
    }
    assert_eq!(
        scrape(gw.metrics)
            .await
            .value(DENIED, &[("route", "app"), ("reason", "forward_auth")]),
        2.0
    );
}

#[tokio::test]
async fn forward_auth_down_stopped_hung_or_garbled_is_503() {
    let _shared = SERIAL.read().await;
    let up = upstream::echo().await;
    let mut auth = AuthServer::start().await;
    let hung = upstream::hang().await;
    let closed = upstream::closed();
    let (garbled, _garbage_task) = garbage_server().await;
    let rest = [
        sso("sso", auth.addr, "2s"),
        sso("down", closed, "2s"),
        sso("hung", hung.addr, "1s"),
        sso("garbled", garbled, "2s"),
        route("app", "/app/", "sso"),
        route("down", "/down/", "down"),
        route("hung", "/hung/", "hung"),
        route("garbled", "/garbled/", "garbled"),
        OPEN.to_owned(),
    ]
    .concat();
    let gw = Gateway::start(&config(&rest, up.addr, None, false)).await;
    for h2 in [false, true] {
        let v = if h2 { "h2" } else { "h1" };
        let c = client::http(h2);
        let cookie = [("Cookie", "session=good")];
        assert_eq!(
            get(&c, &gw, "/down/x", None, &cookie).await.0,
            503,
            "{v}: connection refused"
        );
        assert_eq!(
            get(&c, &gw, "/garbled/x", None, &cookie).await.0,
            503,
            "{v}: not HTTP"
        );
        let t = Instant::now();
        assert_eq!(
            get(&c, &gw, "/hung/x", None, &cookie).await.0,
            503,
            "{v}: no answer"
        );
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{v}: a 1 s timeout answered after {took:?}"
        );
        assert_eq!(
            get(&c, &gw, "/app/x", None, &cookie).await.0,
            200,
            "{v}: the live one passes"
        );
        assert_eq!(status(&c, &gw, "/open", None).await, 200, "{v}");
    }
    // The live service stops (its kept-alive connection closed too): 503, never a pass.
    auth.stop().await;
    for h2 in [false, true] {
        let c = client::http(h2);
        let (s, _, _) = get(
            &c,
            &gw,
            "/app/x",
            None,
            &[("Cookie", "session=good"), ("X-Mark", "after-stop")],
        )
        .await;
        assert_eq!(s, 503, "h2={h2}: the auth service is stopped");
    }
    assert!(up.seen().iter().all(|s| !s.uri.starts_with("/down/")
        && !s.uri.starts_with("/hung/")
        && !s.uri.starts_with("/garbled/")
        && s.header("x-mark") != Some("after-stop")));
    // Each failure is logged with the policy's url.
    let url = format!("http://{closed}/api/verify");
    gw.wait_log(STEP, "the warning naming the auth url", |log| {
        log.lines().any(|l| l.contains(&url) && l.contains("WARN"))
    })
    .await;
}

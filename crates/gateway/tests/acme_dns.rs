//! DNS-01 end to end with real parts on loopback: BIND 9 (`named`) as the zone's
//! authoritative server accepting TSIG-signed updates, Pebble validating against it
//! (`pebble -dnsserver`), the gateway publishing the TXT records through each provider
//! kind (`rfc2136`; `exec` with a script calling `nsupdate`; `alidns` and `cloudflare`
//! through local servers that check each request as the provider documents it, then
//! write the record into BIND), waiting until BIND answers them, and removing them after.
//! Also: a wildcard plus apex certificate served for any subdomain by SNI, and the failure
//! paths (a wrong TSIG key, a record that never becomes visible, a CA that sees another
//! value), each keeping the served certificate and cleaning up.

mod harness;

use harness::acme::{log_line_with, wait_issued_for};
use harness::bind::{Bind, KEY_NAME, KEY_SECRET};
use harness::pebble::Pebble;
use harness::process::require_tool;
use harness::{gateway::cli, upstream, Gateway};
use std::path::Path;
use std::time::Duration;

const ZONE: &str = "example.com";

/// BIND for [`ZONE`], Pebble validating against it, an echo upstream and a storage.
struct Dns {
    bind: Bind,
    pebble: Pebble,
    up: upstream::Upstream,
    storage: tempfile::TempDir,
}

impl Dns {
    async fn start() -> Dns {
        let bind = Bind::start(ZONE).await;
        let mut pebble = Pebble::start(harness::free_port(), &[]).await;
        pebble.use_dns(bind.addr).await;
        Dns {
            bind,
            pebble,
            up: upstream::echo().await,
            storage: tempfile::tempdir().unwrap(),
        }
    }

    /// The gateway's configuration: `[acme]` for Pebble, one certificate `wild` given by
    /// `cert` (its `[[acme.certificates]]` body), and `providers` (`[acme.dns_providers.*]`).
    fn config(&self, cert: &str, providers: &str) -> String {
        format!(
            r#"
[listen]
https = "{{HTTPS}}"
http = "{{HTTP}}"
metrics = "{{METRICS}}"
[server]
grace_period = "1s"
[tls]
default_certificate = "wild"
[acme]
directory = "{dir}"
storage = "{storage}"
ca_root = "{root}"
retry_min = "200ms"
retry_max = "2s"
[[acme.certificates]]
name = "wild"
{cert}
{providers}
[upstreams.echo]
address = "{up}"
[[routes]]
prefix = "/"
upstream = "echo"
"#,
            dir = self.pebble.directory(),
            storage = self.storage.path().display(),
            root = self.pebble.listener_root().display(),
            up = self.up.addr,
        )
    }

    /// The `rfc2136` provider `main-dns` for this BIND server, as the issue writes it, with
    /// `nameservers` (no NS lookup through the system resolver on a test machine).
    fn rfc2136(&self, secret: &str) -> String {
        format!(
            r#"
[acme.dns_providers.main-dns]
kind = "rfc2136"                       # alidns | cloudflare | rfc2136 | exec
server = "{addr}"
zone = "example.com"
tsig_key_name = "{KEY_NAME}"
tsig_algorithm = "hmac-sha256"
tsig_secret = "{secret}"
propagation_timeout = "120s"
nameservers = ["{addr}"]
"#,
            addr = self.bind.addr,
        )
    }

    /// Waits until no challenge TXT record is left at `_acme-challenge.<name>`.
    async fn wait_clean(&self, name: &str) {
        let owner = format!("_acme-challenge.{name}");
        harness::poll_until(
            Duration::from_secs(30),
            "the TXT records to be removed",
            || async { self.bind.txt(&owner).await.is_empty().then_some(()) },
        )
        .await;
    }
}

/// The certificate of the issue's syntax: a wildcard and its apex, `dns-01`, `main-dns`.
const WILD: &str = r#"names = ["*.${DOMAIN}", "${DOMAIN}"]
challenge = "dns-01"
dns_provider = "main-dns""#;

/// A wildcard and apex certificate through `rfc2136`, the secret from the environment:
/// served for the apex and any subdomain by SNI, chaining to Pebble; BIND keeps no TXT
/// record afterwards; `gateway certs` names the challenge, the provider and the
/// propagation time.
///
/// To see it fail: publish one TXT value per owner name in `dns::publish` (the apex's and
/// the wildcard's share `_acme-challenge.example.com`), or skip `TxtRecords::cleanup`.
#[tokio::test]
async fn rfc2136_issues_a_wildcard_and_apex_certificate_served_for_any_subdomain() {
    let d = Dns::start().await;
    let cfg = d.config(WILD, &d.rfc2136("${TSIG_SECRET}"));
    let gw = Gateway::start_with_env(&cfg, &[("DOMAIN", ZONE), ("TSIG_SECRET", KEY_SECRET)]).await;
    wait_issued_for(
        gw.https,
        &d.pebble,
        &["example.com", "app.example.com", "grafana.example.com"],
    )
    .await;
    log_line_with(
        &gw,
        Duration::from_secs(10),
        &[
            "visible on every authoritative server",
            "_acme-challenge.example.com",
        ],
    )
    .await;
    d.wait_clean(ZONE).await;
    let certs = cli(&gw, &["certs", "--config", gw.config.to_str().unwrap()]).await;
    let text = String::from_utf8_lossy(&certs.stdout);
    assert!(
        text.contains("challenge: dns-01 via main-dns (rfc2136)"),
        "{text}"
    );
    assert!(text.contains("propagated:"), "{text}");
    assert!(text.contains("error:    none"), "{text}");
}

/// Writes an `exec` hook: logs each call to `calls.log` beside it, and (unless `publish`
/// is false) sends the record to BIND with `nsupdate`, the value changed by `mangle`
/// (a shell expression of `$3`).
fn hook(dir: &Path, bind: &Bind, publish: bool) -> std::path::PathBuf {
    let nsupdate = require_tool("nsupdate", "bind9-dnsutils");
    let path = dir.join("dns-hook.sh");
    let log = dir.join("calls.log");
    let send = if publish {
        format!(
            r#"case "$1" in
  present) op="update add $2 60 TXT \"$3\"" ;;
  cleanup) op="update delete $2 TXT \"$3\"" ;;
  *) echo "unknown action $1" >&2; exit 2 ;;
esac
printf '%b\n%s\nsend\n' "{header}" "$op" | {nsupdate} || exit 1"#,
            header = bind.nsupdate_header().trim_end().replace('\n', "\\n"),
            nsupdate = nsupdate.display(),
        )
    } else {
        String::new()
    };
    let script = format!(
        "#!/bin/sh\necho \"$1 $2 $3\" >> {log}\n{send}\n",
        log = log.display()
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn calls(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("calls.log")).unwrap_or_default()
}

/// `exec` with a script that calls `nsupdate`: called `present FQDN. VALUE` for each of the
/// two values and `cleanup` for each after validation, and the certificate is issued.
#[tokio::test]
async fn exec_hook_with_nsupdate_issues_and_is_called_present_then_cleanup() {
    let d = Dns::start().await;
    let hooks = tempfile::tempdir().unwrap();
    let script = hook(hooks.path(), &d.bind, true);
    let providers = format!(
        "[acme.dns_providers.main-dns]\nkind = \"exec\"\ncommand = \"{}\"\ntimeout = \"30s\"\nzone = \"example.com\"\nnameservers = [\"{}\"]\n",
        script.display(),
        d.bind.addr
    );
    let gw = Gateway::start_with_env(&d.config(WILD, &providers), &[("DOMAIN", ZONE)]).await;
    wait_issued_for(gw.https, &d.pebble, &["example.com", "n8n.example.com"]).await;
    d.wait_clean(ZONE).await;
    let log = calls(hooks.path());
    let lines: Vec<&str> = log.lines().collect();
    let present: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("present _acme-challenge.example.com. "))
        .collect();
    let cleanup: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("cleanup _acme-challenge.example.com. "))
        .collect();
    assert_eq!(present.len(), 2, "one call per value (apex and wildcard):\n{log}");
    assert_eq!(cleanup.len(), 2, "{log}");
    for p in &present {
        let value = p.rsplit(' ').next().unwrap();
        assert_eq!(value.len(), 43, "base64url of a SHA-256: {p}");
        assert!(cleanup.iter().any(|c| c.ends_with(value)), "{log}");
    }
}

/// A TSIG key BIND does not know: the update is refused (NOTAUTH), the error says so in the
/// log and in `gateway certs`, the loop backs off and tries again, the self-signed
/// placeholder stays served, and no TXT record is left.
#[tokio::test]
async fn a_wrong_tsig_key_is_a_clear_error_with_backoff_and_the_placeholder_stays() {
    let d = Dns::start().await;
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktIQ==";
    let gw = Gateway::start_with_env(&d.config(WILD, &d.rfc2136(wrong)), &[("DOMAIN", ZONE)]).await;
    let line = log_line_with(&gw, Duration::from_secs(30), &["DNS UPDATE to", "refused"]).await;
    assert!(line.contains("main-dns"), "{line}");
    // Backoff: a second attempt follows, the first error stays the same.
    harness::until(Duration::from_secs(30), "a second failed attempt", || {
        (gw.stderr().matches("DNS UPDATE to").count() >= 2).then_some(())
    })
    .await;
    let certs = cli(&gw, &["certs", "--config", gw.config.to_str().unwrap()]).await;
    let text = String::from_utf8_lossy(&certs.stdout);
    assert!(text.contains("refused"), "{text}");
    assert!(text.contains("(not issued yet)"), "{text}");
    // The placeholder is still served for the names.
    let (tls, _) = harness::client::tls(gw.https, "app.example.com").await;
    drop(tls);
    assert!(d.bind.txt("_acme-challenge.example.com").await.is_empty());
}

/// A provider that reports success but whose record never appears: the propagation check
/// gives up after `propagation_timeout` naming the server and what it answered, the CA is
/// never asked to validate, and `cleanup` is still called for every value.
#[tokio::test]
async fn a_record_that_never_appears_is_a_propagation_timeout_and_is_cleaned_up() {
    let d = Dns::start().await;
    let hooks = tempfile::tempdir().unwrap();
    let script = hook(hooks.path(), &d.bind, false);
    let providers = format!(
        "[acme.dns_providers.main-dns]\nkind = \"exec\"\ncommand = \"{}\"\nzone = \"example.com\"\nnameservers = [\"{}\"]\npropagation_timeout = \"3s\"\n",
        script.display(),
        d.bind.addr
    );
    let gw = Gateway::start_with_env(&d.config(WILD, &providers), &[("DOMAIN", ZONE)]).await;
    let line = log_line_with(
        &gw,
        Duration::from_secs(30),
        &["was not visible on every authoritative server"],
    )
    .await;
    assert!(
        line.contains(&d.bind.addr.to_string()) && line.contains("no TXT record yet"),
        "{line}"
    );
    harness::until(Duration::from_secs(10), "cleanup calls", || {
        let log = calls(hooks.path());
        (log.matches("cleanup _acme-challenge.example.com. ").count() >= 2).then_some(log)
    })
    .await;
    // The CA was never asked to validate: no validation verdict reached the log.
    assert!(!gw.stderr().contains("validation failed"), "{}", gw.stderr());
}

#[path = "../../dns01/tests/support/alidns_server.rs"]
mod alidns_server;
#[path = "../../dns01/tests/support/cloudflare_server.rs"]
mod cloudflare_server;

/// A callback for the fake provider APIs: applies one change to BIND with `nsupdate`, as
/// the provider's own DNS servers would serve it. `op` is `add NAME TXT VALUE` or
/// `delete NAME TXT VALUE`.
fn nsupdater(bind: &Bind) -> impl Fn(&str) + Send + Sync + 'static {
    let header = bind.nsupdate_header();
    let nsupdate = require_tool("nsupdate", "bind9-dnsutils");
    move |op: &str| {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), format!("{header}update {op}\nsend\n")).unwrap();
        let out = harness::process::run_cmd(
            std::process::Command::new(&nsupdate).arg(file.path()),
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "nsupdate {op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `alidns` against a local server that checks each request's ACS3-HMAC-SHA256 signature
/// as Alibaba Cloud documents it and writes the records into BIND: the wildcard and apex
/// certificate is issued, both records are deleted afterwards (through
/// DescribeDomainRecords and DeleteDomainRecord), and the secret came from `${ENV}`.
#[tokio::test]
async fn alidns_issues_through_a_signature_checking_api_and_deletes_its_records() {
    let d = Dns::start().await;
    let apply = nsupdater(&d.bind);
    let api = alidns_server::start(
        "LTAI5tGatewayTestKey",
        "alidns-test-secret",
        std::sync::Arc::new(move |c| match c {
            alidns_server::Change::Added { domain, rr, value } => {
                apply(&format!("add {rr}.{domain}. 60 TXT \"{value}\""))
            }
            alidns_server::Change::Deleted { domain, rr, value } => {
                apply(&format!("delete {rr}.{domain}. TXT \"{value}\""))
            }
        }),
    )
    .await;
    let providers = format!(
        "[acme.dns_providers.main-dns]\nkind = \"alidns\"\naccess_key_id = \"LTAI5tGatewayTestKey\"\naccess_key_secret = \"${{ALI_SECRET}}\"\nendpoint = \"{}\"\nzone = \"example.com\"\nnameservers = [\"{}\"]\n",
        api.url, d.bind.addr
    );
    let gw = Gateway::start_with_env(
        &d.config(WILD, &providers),
        &[("DOMAIN", ZONE), ("ALI_SECRET", "alidns-test-secret")],
    )
    .await;
    wait_issued_for(gw.https, &d.pebble, &["example.com", "ai.example.com"]).await;
    d.wait_clean(ZONE).await;
    harness::until(Duration::from_secs(10), "the API's records to be deleted", || {
        api.records().is_empty().then_some(())
    })
    .await;
    let actions = api.requests();
    for a in ["AddDomainRecord", "DescribeDomainRecords", "DeleteDomainRecord"] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
    assert!(
        !gw.stderr().contains("alidns-test-secret"),
        "the secret is never logged"
    );
}

/// `alidns` with a wrong AccessKey secret: the API refuses the signature, the log names the
/// provider, the action and Alibaba Cloud's code, and nothing was added.
#[tokio::test]
async fn alidns_with_a_wrong_secret_reports_the_apis_code() {
    let d = Dns::start().await;
    let api = alidns_server::start(
        "LTAI5tGatewayTestKey",
        "the-right-secret",
        std::sync::Arc::new(|_| {}),
    )
    .await;
    let providers = format!(
        "[acme.dns_providers.main-dns]\nkind = \"alidns\"\naccess_key_id = \"LTAI5tGatewayTestKey\"\naccess_key_secret = \"a-wrong-secret\"\nendpoint = \"{}\"\nzone = \"example.com\"\nnameservers = [\"{}\"]\n",
        api.url, d.bind.addr
    );
    let gw = Gateway::start_with_env(&d.config(WILD, &providers), &[("DOMAIN", ZONE)]).await;
    let line = log_line_with(&gw, Duration::from_secs(30), &["SignatureDoesNotMatch"]).await;
    assert!(line.contains("main-dns") && line.contains("alidns"), "{line}");
    assert!(api.records().is_empty());
    assert!(
        !gw.stderr().contains("a-wrong-secret"),
        "the secret is never logged"
    );
}

/// `cloudflare` against a local API that checks the bearer token, paths, query and JSON
/// bodies as Cloudflare's API v4 documents them and writes the records into BIND: the
/// certificate is issued and both records are deleted afterwards.
#[tokio::test]
async fn cloudflare_issues_through_a_token_checking_api_and_deletes_its_records() {
    let d = Dns::start().await;
    let apply = nsupdater(&d.bind);
    let api = cloudflare_server::CloudflareServer::start(
        "cf-test-token",
        ZONE,
        std::sync::Arc::new(move |c| match c {
            cloudflare_server::Change::Added { name, content } => {
                apply(&format!("add {name}. 60 TXT \"{content}\""))
            }
            cloudflare_server::Change::Deleted { name, content } => {
                apply(&format!("delete {name}. TXT \"{content}\""))
            }
        }),
    )
    .await;
    let providers = format!(
        "[acme.dns_providers.main-dns]\nkind = \"cloudflare\"\napi_token = \"${{CF_TOKEN}}\"\nendpoint = \"{}\"\nnameservers = [\"{}\"]\nzone = \"example.com\"\n",
        api.url, d.bind.addr
    );
    let gw = Gateway::start_with_env(
        &d.config(WILD, &providers),
        &[("DOMAIN", ZONE), ("CF_TOKEN", "cf-test-token")],
    )
    .await;
    wait_issued_for(gw.https, &d.pebble, &["example.com", "nodered.example.com"]).await;
    d.wait_clean(ZONE).await;
    harness::until(Duration::from_secs(10), "the API's records to be deleted", || {
        api.records().is_empty().then_some(())
    })
    .await;
    let requests = api.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /client/v4/zones?")),
        "{requests:?}"
    );
    assert!(
        requests.iter().filter(|r| r.starts_with("DELETE ")).count() >= 2,
        "{requests:?}"
    );
}

/// The CA sees another value than the one published: the records go to a second BIND
/// server (where the propagation check finds them) while Pebble asks the first, so the CA
/// rejects the challenge. The log carries the CA's words, the placeholder stays served, and
/// the records are removed from the server they were written to.
#[tokio::test]
async fn a_ca_that_rejects_the_challenge_is_reported_and_the_records_are_removed() {
    let d = Dns::start().await;
    let other = Bind::start(ZONE).await;
    let providers = format!(
        "[acme.dns_providers.main-dns]\nkind = \"rfc2136\"\nserver = \"{addr}\"\nzone = \"example.com\"\ntsig_key_name = \"{KEY_NAME}\"\ntsig_secret = \"{KEY_SECRET}\"\nnameservers = [\"{addr}\"]\n",
        addr = other.addr
    );
    // One attempt, then a long backoff: the records seen gone are not those of a retry.
    let cfg = d
        .config(WILD, &providers)
        .replace("retry_min = \"200ms\"", "retry_min = \"60s\"");
    let gw = Gateway::start_with_env(&cfg, &[("DOMAIN", ZONE)]).await;
    let line = log_line_with(
        &gw,
        Duration::from_secs(60),
        &["could not obtain certificate", "validation failed"],
    )
    .await;
    assert!(line.contains("TXT"), "the CA's words: {line}");
    harness::poll_until(
        Duration::from_secs(30),
        "the records removed from the server written to",
        || async {
            other
                .txt("_acme-challenge.example.com")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let certs = cli(&gw, &["certs", "--config", gw.config.to_str().unwrap()]).await;
    assert!(String::from_utf8_lossy(&certs.stdout).contains("(not issued yet)"));
}

/// Without `zone` and `nameservers`, the zone and its authoritative servers are found as
/// in production (an SOA walk up the name, the zone's NS records, their addresses), here
/// asked of a real BIND server, the only difference being its port instead of 53; then
/// the propagation check waits for a value published with `nsupdate` and times out, naming
/// the server, for one never published.
#[tokio::test]
async fn the_zone_and_its_servers_are_found_through_soa_and_ns_and_propagation_is_waited_for() {
    use gateway_dns01::propagation::{self, Discovery};
    let bind = Bind::start(ZONE).await;
    let d = Discovery::via(bind.addr, bind.addr.port());
    assert_eq!(
        d.find_zone("_acme-challenge.app.example.com").await.unwrap(),
        "example.com"
    );
    assert_eq!(
        d.authoritative_servers("example.com").await.unwrap(),
        vec![bind.addr]
    );
    let e = d.find_zone("_acme-challenge.example.org").await.unwrap_err();
    assert!(matches!(e, gateway_dns01::Dns01Error::NoZone { .. }), "{e}");
    let servers = vec![bind.addr];
    let owner = "_acme-challenge.example.com";
    let value = "dpLDrTVAu4A8Ags67mbNiIcSMjTqDG5xQ8Ct1z_0Me0".to_owned();
    let apply = nsupdater(&bind);
    apply(&format!("add {owner}. 60 TXT \"{value}\""));
    let took = propagation::wait(
        owner,
        std::slice::from_ref(&value),
        &servers,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(took < Duration::from_secs(5), "{took:?}");
    let missing = "P8TM_nRYcOLA2Z9x8w_wZWyN7dQcwdfT03aw2-aF4vM".to_owned();
    let e = propagation::wait(owner, &[value.clone(), missing], &servers, Duration::from_secs(3))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&bind.addr.to_string()) && e.contains(&format!("only {value}")),
        "{e}"
    );
}

/// An exec hook that runs past its `timeout`: it is killed with everything it started (a
/// child left running could still add the record), and `cleanup` is called for the values
/// its `present` may have added.
#[tokio::test]
async fn a_hook_past_its_timeout_is_killed_with_its_children_and_cleaned_up() {
    let d = Dns::start().await;
    let hooks = tempfile::tempdir().unwrap();
    let dir = hooks.path().display().to_string();
    let script = hooks.path().join("slow-hook.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1 $2 $3\" >> {dir}/calls.log\nif [ \"$1\" = present ]; then sleep 60 & echo $! > {dir}/child.pid; wait; fi\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let providers = format!(
        "[acme.dns_providers.main-dns]\nkind = \"exec\"\ncommand = \"{}\"\ntimeout = \"2s\"\nzone = \"example.com\"\nnameservers = [\"{}\"]\n",
        script.display(),
        d.bind.addr
    );
    let cfg = d
        .config(WILD, &providers)
        .replace("retry_min = \"200ms\"", "retry_min = \"60s\"");
    let gw = Gateway::start_with_env(&cfg, &[("DOMAIN", ZONE)]).await;
    log_line_with(&gw, Duration::from_secs(30), &["ran past its timeout of 2s"]).await;
    let pid = harness::until(Duration::from_secs(10), "the hook's child pid", || {
        std::fs::read_to_string(hooks.path().join("child.pid"))
            .ok()
            .filter(|p| !p.trim().is_empty())
    })
    .await;
    let child = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
    harness::until(Duration::from_secs(10), "the hook's child killed", || {
        (!child.exists()).then_some(())
    })
    .await;
    harness::until(
        Duration::from_secs(10),
        "cleanup after the timed-out present",
        || {
            calls(hooks.path())
                .contains("cleanup _acme-challenge.example.com. ")
                .then_some(())
        },
    )
    .await;
}

//! `challenge`, `dns_provider`, `profile` and `[acme.dns_providers.NAME]`: the issue's
//! syntax as written, and every refusal at its line.

mod common;

use common::{env, ok, one};
use gateway_config::{parse, Challenge, DnsProviderKind, TsigAlgorithm};
use std::time::Duration;

const ISSUE: &str = r#"
[[acme.certificates]]
name = "wild"
names = ["*.${DOMAIN}", "${DOMAIN}"]
challenge = "dns-01"
dns_provider = "main-dns"
profile = "tlsserver"

[acme.dns_providers.main-dns]
kind = "rfc2136"                       # alidns | cloudflare | rfc2136 | exec
server = "127.0.0.1:53"
zone = "example.com"
tsig_key_name = "gateway"
tsig_algorithm = "hmac-sha256"
tsig_secret = "${TSIG_SECRET}"
# alidns:     access_key_id, access_key_secret, endpoint (default alidns.aliyuncs.com)
# cloudflare: api_token, endpoint (default the public API)
# exec:       command = "/etc/gateway/dns-hook.sh", timeout = "60s"
propagation_timeout = "120s"
"#;

#[test]
fn the_issue_syntax_is_accepted_as_written() {
    let c = ok(ISSUE);
    let acme = c.acme.as_ref().unwrap();
    let cert = &acme.certificates[0];
    assert_eq!(cert.names, vec!["*.example.com", "example.com"]);
    assert_eq!(cert.challenge, Challenge::Dns01);
    assert_eq!(cert.dns_provider.as_deref(), Some("main-dns"));
    assert_eq!(cert.profile.as_deref(), Some("tlsserver"));
    let p = &acme.dns_providers[0];
    assert_eq!(p.name, "main-dns");
    assert_eq!(p.zone.as_deref(), Some("example.com"));
    assert_eq!(p.propagation_timeout, Duration::from_secs(120));
    assert!(p.nameservers.is_empty());
    let DnsProviderKind::Rfc2136(r) = &p.kind else {
        panic!("{:?}", p.kind)
    };
    assert_eq!(r.server.to_string(), "127.0.0.1:53");
    assert_eq!(r.tsig_key_name, "gateway");
    assert_eq!(r.tsig_algorithm, TsigAlgorithm::HmacSha256);
    assert_eq!(r.tsig_secret.0, "c2VjcmV0LWtleS1mb3ItdGhlLWdhdGV3YXktdGVzdHM=");
    assert!(
        !format!("{p:?}").contains("c2VjcmV0"),
        "Debug hides the secret: {p:?}"
    );
}

#[test]
fn each_provider_kind_takes_its_keys_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("hooks")).unwrap();
    let hook = dir.path().join("hooks/dns.sh");
    std::fs::write(&hook, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = r#"
[acme.dns_providers.ali]
kind = "alidns"
access_key_id = "LTAI5t"
access_key_secret = "s"
[acme.dns_providers.cf]
kind = "cloudflare"
api_token = "t"
nameservers = ["192.0.2.53", "127.0.0.1:5353", "[2001:db8::53]"]
[acme.dns_providers.hook]
kind = "exec"
command = "hooks/dns.sh"
"#;
    let c = parse(src, &dir.path().join("proxy.toml"), &env).unwrap_or_else(|e| panic!("refused: {e}"));
    let p = &c.acme.as_ref().unwrap().dns_providers;
    let DnsProviderKind::Alidns(a) = &p[0].kind else {
        panic!()
    };
    assert_eq!(a.endpoint, "https://alidns.aliyuncs.com");
    let DnsProviderKind::Cloudflare(f) = &p[1].kind else {
        panic!()
    };
    assert_eq!(f.endpoint, "https://api.cloudflare.com/client/v4");
    let ns: Vec<String> = p[1].nameservers.iter().map(|a| a.to_string()).collect();
    assert_eq!(ns, ["192.0.2.53:53", "127.0.0.1:5353", "[2001:db8::53]:53"]);
    let DnsProviderKind::Exec(e) = &p[2].kind else {
        panic!()
    };
    assert_eq!(e.command, hook, "relative to proxy.toml");
    assert_eq!(e.timeout, Duration::from_secs(60));
}

const PROVIDER: &str = "[acme.dns_providers.main-dns]\nkind = \"exec\"\ncommand = \"/bin/true\"\n";

#[test]
fn a_wildcard_needs_dns_01() {
    let (line, msg) = one("[[acme.certificates]]\nname = \"w\"\nnames = [\"*.example.com\"]\n");
    assert_eq!(line, 3);
    assert!(msg.contains("only dns-01 can validate it"), "{msg}");
    let (line, msg) = one(&format!(
        "[[acme.certificates]]\nname = \"w\"\nnames = [\"*.*.example.com\"]\nchallenge = \"dns-01\"\ndns_provider = \"main-dns\"\n{PROVIDER}"
    ));
    assert_eq!(line, 3);
    assert!(msg.contains("not a name a CA issues for"), "{msg}");
}

#[test]
fn dns_01_needs_a_defined_provider_and_only_dns_01_takes_one() {
    let (line, msg) =
        one("[[acme.certificates]]\nname = \"w\"\nnames = [\"example.com\"]\nchallenge = \"dns-01\"\n");
    assert_eq!(line, 4);
    assert!(msg.contains("needs `dns_provider"), "{msg}");
    let (line, msg) = one(&format!(
        "[[acme.certificates]]\nname = \"w\"\nnames = [\"example.com\"]\nchallenge = \"dns-01\"\ndns_provider = \"main-dsn\"\n{PROVIDER}"
    ));
    assert_eq!(line, 5);
    assert!(msg.contains("did you mean `main-dns`"), "{msg}");
    let (line, msg) = one(&format!(
        "[[acme.certificates]]\nname = \"w\"\nnames = [\"example.com\"]\ndns_provider = \"main-dns\"\n{PROVIDER}"
    ));
    assert_eq!(line, 4);
    assert!(msg.contains("used by dns-01 only"), "{msg}");
    let (line, msg) =
        one("[[acme.certificates]]\nname = \"w\"\nnames = [\"example.com\"]\nchallenge = \"http-02\"\n");
    assert_eq!(line, 4);
    assert!(msg.contains("not an ACME challenge type"), "{msg}");
}

#[test]
fn an_ip_address_never_uses_dns_01() {
    let (line, msg) = one(&format!(
        "[[acme.certificates]]\nname = \"ip\"\nnames = [\"47.96.1.2\"]\nchallenge = \"dns-01\"\ndns_provider = \"main-dns\"\n{PROVIDER}"
    ));
    assert_eq!(line, 3);
    assert!(msg.contains("RFC 8738"), "{msg}");
    let c = ok("[[acme.certificates]]\nname = \"ip\"\nnames = [\"47.96.1.2\", \"2400:3200::1\"]\nchallenge = \"tls-alpn-01\"\n");
    assert_eq!(
        c.acme.unwrap().certificates[0].names,
        ["47.96.1.2", "2400:3200::1"]
    );
}

#[test]
fn provider_sections_are_checked_key_by_key() {
    let cases: &[(&str, usize, &str)] = &[
        ("kind = \"route53\"\n", 2, "not a DNS provider kind"),
        ("kind = \"rfc2136\"\nserver = \"127.0.0.1\"\ntsig_key_name = \"k\"\ntsig_secret = \"not base64!\"\n", 5, "not base64"),
        ("kind = \"rfc2136\"\nserver = \"127.0.0.1\"\ntsig_key_name = \"k\"\ntsig_secret = \"a2V5\"\ntsig_algorithm = \"hmac-md5\"\n", 6, "not a TSIG algorithm"),
        ("kind = \"rfc2136\"\nserver = \"ns1.example.com\"\ntsig_key_name = \"k\"\ntsig_secret = \"a2V5\"\n", 3, "not a name server address"),
        ("kind = \"alidns\"\naccess_key_id = \"id\"\n", 1, "needs `access_key_secret`"),
        ("kind = \"alidns\"\naccess_key_id = \"id\"\naccess_key_secret = \"s\"\napi_token = \"t\"\n", 5, "`api_token` is not a setting of the `alidns` DNS provider"),
        ("kind = \"cloudflare\"\napi_token = \"${CF_TOKEN}\"\n", 3, "CF_TOKEN"),
        ("kind = \"cloudflare\"\napi_token = \"t\"\nendpoint = \"api.cloudflare.com\"\n", 4, "not a URL"),
        ("kind = \"exec\"\ncommand = \"/bin/true\"\ntimeout = \"0s\"\n", 4, "above zero"),
        ("kind = \"exec\"\ncommand = \"/bin/true\"\nzone = \"exa mple.com\"\n", 4, "not a DNS zone name"),
        ("kind = \"exec\"\ncommand = \"/bin/true\"\npropagation_timeout = \"2\"\n", 4, "no unit"),
        ("command = \"/bin/true\"\n", 1, "needs `kind`"),
    ];
    for (body, line, needle) in cases {
        let (l, msg) = one(&format!("[acme.dns_providers.p]\n{body}"));
        assert!(msg.contains(needle), "{body}: {msg}");
        assert_eq!(l, *line, "{body}: {msg}");
    }
}

#[test]
fn an_exec_hook_must_be_an_executable_file() {
    let (line, msg) =
        one("[acme.dns_providers.p]\nkind = \"exec\"\ncommand = \"/nonexistent/dns-hook.sh\"\n");
    assert_eq!(line, 3);
    assert!(msg.contains("cannot use `/nonexistent/dns-hook.sh`"), "{msg}");
    let (line, msg) = one("[acme.dns_providers.p]\nkind = \"exec\"\ncommand = \"/etc/passwd\"\n");
    assert_eq!(line, 3);
    assert!(msg.contains("not executable: `chmod +x` it"), "{msg}");
    let (_, msg) = one("[acme.dns_providers.p]\nkind = \"exec\"\ncommand = \"/bin/sh -c true\"\n");
    assert!(msg.contains("without arguments"), "{msg}");
    let (_, msg) = one("[acme.dns_providers.p]\nkind = \"exec\"\ncommand = \"/etc\"\n");
    assert!(msg.contains("is a directory"), "{msg}");
}

#[test]
fn http_01_needs_the_http_listener() {
    let (line, msg) =
        one("[listen]\nhttp = \"off\"\n[[acme.certificates]]\nname = \"w\"\nnames = [\"example.com\"]\n");
    assert_eq!(line, 4);
    assert!(msg.contains("`[listen] http` is `off`"), "{msg}");
    ok("[listen]\nhttp = \"off\"\n[[acme.certificates]]\nname = \"w\"\nnames = [\"example.com\"]\nchallenge = \"tls-alpn-01\"\n");
}

#[test]
fn a_profile_is_a_token() {
    let (line, msg) =
        one("[[acme.certificates]]\nname = \"w\"\nnames = [\"example.com\"]\nprofile = \"short lived\"\n");
    assert_eq!(line, 4);
    assert!(msg.contains("not an ACME profile name"), "{msg}");
}

#[test]
fn certificate_names_never_leave_the_storage_directory() {
    for bad in ["../evil", "/tmp/abs", "accounts", ".hidden", "a b"] {
        let (line, msg) = one(&format!(
            "[[acme.certificates]]\nname = \"{bad}\"\nnames = [\"example.com\"]\n"
        ));
        assert_eq!(line, 2, "{bad}: {msg}");
        assert!(msg.contains("cannot name a certificate"), "{bad}: {msg}");
    }
    let (line, msg) = one("[[tls.certificates]]\nname = \"../x\"\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nif_missing = \"self-signed\"\nhosts = [\"a.example.com\"]\n");
    assert_eq!(line, 2, "{msg}");
    ok("[[acme.certificates]]\nname = \"main_2.example-com\"\nnames = [\"example.com\"]\n");
}

#[test]
fn names_are_what_a_ca_issues_for_and_inside_the_providers_zone() {
    for (name, needle) in [
        ("example.com.", "without its trailing dot"),
        ("-a.example.com", "not a name a CA issues for"),
        ("a_b.example.com", "not a name a CA issues for"),
        ("*.com", "not a name a CA issues for"),
    ] {
        let (line, msg) = one(&format!("[[acme.certificates]]\nname = \"w\"\nnames = [\"{name}\"]\nchallenge = \"dns-01\"\ndns_provider = \"main-dns\"\n{PROVIDER}"));
        assert_eq!(line, 3, "{name}: {msg}");
        assert!(msg.contains(needle), "{name}: {msg}");
    }
    let (line, msg) = one(&format!(
        "[[acme.certificates]]\nname = \"w\"\nnames = [\"*.example.com\", \"example.org\"]\nchallenge = \"dns-01\"\ndns_provider = \"main-dns\"\n{PROVIDER}zone = \"example.com\"\n"
    ));
    assert_eq!(line, 5, "{msg}");
    assert!(
        msg.contains("`example.org` is not in the zone `example.com`"),
        "{msg}"
    );
}

#[test]
fn provider_timeouts_fit_in_the_order_and_servers_have_ports() {
    let (line, msg) = one("[acme]\norder_timeout = \"5m\"\n[acme.dns_providers.p]\nkind = \"exec\"\ncommand = \"/bin/true\"\npropagation_timeout = \"10m\"\n");
    assert_eq!(line, 6, "{msg}");
    assert!(msg.contains("shorter than `[acme] order_timeout`"), "{msg}");
    let (line, msg) =
        one("[acme.dns_providers.p]\nkind = \"exec\"\ncommand = \"/bin/true\"\ntimeout = \"1h\"\n");
    assert_eq!(line, 4, "{msg}");
    assert!(msg.contains("shorter than `[acme] order_timeout`"), "{msg}");
    let (line, msg) = one(
        "[acme.dns_providers.p]\nkind = \"exec\"\ncommand = \"/bin/true\"\nnameservers = [\"127.0.0.1:0\"]\n",
    );
    assert_eq!(line, 4, "{msg}");
    assert!(msg.contains("port 0"), "{msg}");
}

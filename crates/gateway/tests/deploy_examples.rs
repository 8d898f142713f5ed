//! The examples of README's "Beyond one machine": several gateways behind a layer-4 load
//! balancer, sharing their ACME state.
//!
//! - deploy/examples/several-instances/docker-compose.yml: two services of the image that
//!   deploy/docker-compose.prod.yml runs, each on host ports of its own, with the same
//!   read-only proxy.toml where the image reads it, the same env_file (its `.example` is
//!   shipped) and no volume (the storage is a bucket).
//! - deploy/examples/kubernetes/daemonset.yaml: a Secret, a ConfigMap and a DaemonSet that
//!   fit together (envFrom names the Secret, the ConfigMap is mounted where the image reads
//!   proxy.toml), hostPorts 443 and 80 onto the listeners of the ConfigMap's proxy.toml,
//!   probes on its metrics listener's /healthz, the image's user.
//! - Both configurations pass the real binary's `gateway check` with exactly the environment
//!   the container or the pod gets (the image's ENV, the env file or the Secret, the
//!   service's or container's own variables), so every `${NAME}` they read is provided.

mod harness;

/// The parsers of deploy/Dockerfile and the compose helpers.
#[path = "deploy/layout.rs"]
mod layout;

use layout::{compose_expand, parse_image, repo, repo_path, yaml_text, Image};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const COMPOSE_DIR: &str = "deploy/examples/several-instances";
const COMPOSE: &str = "deploy/examples/several-instances/docker-compose.yml";
const KUBERNETES: &str = "deploy/examples/kubernetes/daemonset.yaml";

/// What the admin's `.env` gives compose (DOMAIN has no default there).
const DOTENV: &[(&str, &str)] = &[("DOMAIN", "example.com"), ("ACME_EMAIL", "admin@example.com")];

// ---------------------------------------------------------------------------------------
// Reading the files

/// The value of `key` in `[section]` (or `[[section]]`) of a proxy.toml, without its quotes:
/// a line-based reading, enough for these files (one `key = value` a line).
fn toml_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            current = line.trim_matches(['[', ']']).to_owned();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if current == section && k.trim() == key {
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next().unwrap_or(""),
                None => v.split('#').next().unwrap_or("").trim(),
            };
            return Some(v.to_owned());
        }
    }
    None
}

/// `toml_value` for a key the file must have.
fn toml_required(text: &str, what: &str, section: &str, key: &str) -> String {
    toml_value(text, section, key).unwrap_or_else(|| panic!("{what}: no `{key}` in [{section}]"))
}

/// The port of a listen address (`[::]:443`, `0.0.0.0:9100`, `${X:-127.0.0.1:9100}` expanded).
fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("`{addr}` has no port"))
}

/// The variables a configuration reads without a default: `${NAME}` (not `${NAME:-x}`),
/// outside comments.
fn required_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for part in line.split("${").skip(1) {
            let inner = part.split('}').next().unwrap_or("");
            if !inner.contains(":-") {
                out.insert(inner.to_owned());
            }
        }
    }
    out
}

/// `NAME=value` lines of an env file (compose's `env_file`), comments and blank lines left out.
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("`{l}` is not NAME=value"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Each name set in `names` is a variable of the AWS SDK family (read by the object_store
/// crate for `s3://` storage) or one that `config` reads.
fn all_read(names: impl IntoIterator<Item = String>, config: &str, what: &str) {
    for name in names {
        assert!(
            name.starts_with("AWS_") || config.contains(&format!("${{{name}")),
            "{what} sets {name}, which the configuration does not read"
        );
    }
}

/// Where the gateway reads its configuration when started with `args` (the image's CMD when
/// the deployment gives none): `--config`, else the image's GATEWAY_CONFIG.
fn config_path(image: &Image, args: Option<Vec<String>>) -> String {
    let args = args.unwrap_or_else(|| image.cmd.clone());
    args.iter()
        .position(|a| a == "--config")
        .map(|at| args[at + 1].clone())
        .or_else(|| image.env.get("GATEWAY_CONFIG").cloned())
        .expect("the image names its configuration file")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().into_iter().flatten().map(yaml_text).collect()
}

/// A duration of proxy.toml in whole seconds (`8s`).
fn seconds(v: &str) -> u64 {
    v.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("`{v}` is not in seconds"))
}

// ---------------------------------------------------------------------------------------
// Compose

/// A short-syntax volume: `SOURCE:TARGET[:ro]`.
#[derive(Debug, PartialEq)]
struct Mount {
    source: String,
    target: String,
    read_only: bool,
}

fn mounts(svc: &Value) -> Vec<Mount> {
    strings(&svc["volumes"])
        .iter()
        .map(|s| {
            let parts: Vec<&str> = s.split(':').collect();
            assert!(parts.len() >= 2, "volume `{s}` names a source and a target");
            Mount {
                source: parts[0].to_owned(),
                target: parts[1].to_owned(),
                read_only: parts.get(2).is_some_and(|m| m.split(',').any(|o| o == "ro")),
            }
        })
        .collect()
}

/// `"HOST:CONTAINER"` (or `"IP:HOST:CONTAINER"`) entries: (host port, container port).
fn published(svc: &Value) -> Vec<(u64, u64)> {
    strings(&svc["ports"])
        .iter()
        .map(|p| {
            let parts: Vec<&str> = p.split(':').collect();
            assert!(parts.len() >= 2, "port `{p}` is HOST:CONTAINER");
            let n = |s: &str| -> u64 { s.parse().unwrap_or_else(|_| panic!("port `{p}`")) };
            (n(parts[parts.len() - 2]), n(parts[parts.len() - 1]))
        })
        .collect()
}

/// A service's `environment` (mapping or list), its `${...}` expanded from DOTENV.
fn environment(svc: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if let Some(m) = svc["environment"].as_mapping() {
        for (k, v) in m {
            env.insert(yaml_text(k), compose_expand(&yaml_text(v), DOTENV));
        }
    } else {
        for item in strings(&svc["environment"]) {
            let (k, v) = item.split_once('=').unwrap_or((item.as_str(), ""));
            env.insert(k.to_owned(), compose_expand(v, DOTENV));
        }
    }
    env
}

struct Compose {
    doc: Value,
    image: Image,
    /// The shipped proxy.toml the services mount.
    proxy_toml: String,
}

fn compose() -> Compose {
    let doc: Value = serde_yaml::from_str(&repo(COMPOSE)).unwrap_or_else(|e| panic!("{COMPOSE}: {e}"));
    Compose {
        doc,
        image: parse_image(&repo("deploy/Dockerfile")),
        proxy_toml: repo(&format!("{COMPOSE_DIR}/proxy.toml")),
    }
}

impl Compose {
    fn services(&self) -> Vec<(String, &Value)> {
        self.doc["services"]
            .as_mapping()
            .expect("the compose file has services")
            .iter()
            .map(|(k, v)| (yaml_text(k), v))
            .collect()
    }

    /// What a service's container gets: the image's ENV, then its env_file (the shipped
    /// `.example` of each), then its `environment`.
    fn container_env(&self, svc: &Value) -> BTreeMap<String, String> {
        let mut env = self.image.env.clone();
        for file in strings(&svc["env_file"]) {
            let example = repo(&format!("{COMPOSE_DIR}/{file}.example"));
            env.extend(env_file(&example));
        }
        env.extend(environment(svc));
        env
    }
}

#[test]
fn the_compose_example_runs_two_instances_of_the_image_with_one_read_only_config() {
    let c = compose();
    let services = c.services();
    let names: Vec<&str> = services.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["gateway-a", "gateway-b"], "{COMPOSE}");
    let prod: Value = serde_yaml::from_str(&repo("deploy/docker-compose.prod.yml")).unwrap();
    let prod_image = prod["services"]["gateway"]["image"]
        .as_str()
        .expect("docker-compose.prod.yml names the gateway's image");
    let config = config_path(&c.image, None);
    let (config_dir, config_file) = config.rsplit_once('/').unwrap();
    assert!(
        c.doc["volumes"].is_null(),
        "no named volume: the storage is a bucket"
    );
    assert!(
        toml_required(&c.proxy_toml, "proxy.toml", "acme", "storage").starts_with("s3://"),
        "the example stores in a bucket, so that no volume is shared"
    );
    let https = port_of(&toml_required(&c.proxy_toml, "proxy.toml", "listen", "https"));
    let http = port_of(&toml_required(&c.proxy_toml, "proxy.toml", "listen", "http"));
    let metrics = port_of(&compose_expand(
        &toml_required(&c.proxy_toml, "proxy.toml", "listen", "metrics"),
        &[],
    ));

    let mut config_mounts = Vec::new();
    let mut host_ports = BTreeSet::new();
    let mut env_files = Vec::new();
    let mut envs = Vec::new();
    for (name, svc) in &services {
        assert_eq!(svc["image"].as_str(), Some(prod_image), "{name}: prod's image");
        assert_eq!(
            svc["user"].as_str(),
            Some(format!("{}:{}", c.image.uid, c.image.gid).as_str()),
            "{name}: the image's user"
        );
        assert!(
            svc["container_name"].is_null(),
            "{name}: two instances, two names"
        );
        let ms = mounts(svc);
        for m in &ms {
            assert!(
                m.source.starts_with('.') || m.source.starts_with('/'),
                "{name}: a bind mount, no volume: {m:?}"
            );
        }
        // A directory holding proxy.toml at the image's configuration directory, or the
        // file itself at the image's configuration path.
        let m = ms
            .into_iter()
            .find(|m| m.target == config_dir || m.target == config)
            .unwrap_or_else(|| panic!("{name}: nothing is mounted at {config_dir}"));
        assert!(m.read_only, "{name}: the configuration is read-only: {m:?}");
        let source = repo_path(COMPOSE_DIR).join(&m.source);
        let file = if m.target == config {
            source
        } else {
            source.join(config_file)
        };
        assert_eq!(
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{name}: {}: {e}", file.display())),
            c.proxy_toml,
            "{name} mounts {COMPOSE_DIR}/proxy.toml"
        );
        config_mounts.push(m);

        let ports = published(svc);
        let container: BTreeSet<u64> = ports.iter().map(|(_, c)| *c).collect();
        assert_eq!(
            container,
            BTreeSet::from([https, http]),
            "{name} publishes the listeners of proxy.toml (and not the metrics one, {metrics})"
        );
        for (host, _) in ports {
            assert!(host_ports.insert(host), "host port {host} published twice");
        }
        let files = strings(&svc["env_file"]);
        for f in &files {
            assert!(
                repo_path(COMPOSE_DIR).join(format!("{f}.example")).exists(),
                "{name}: env_file {f} has a {f}.example to copy"
            );
        }
        env_files.push(files);
        envs.push(environment(svc));
        assert_eq!(svc["stop_grace_period"].as_str(), Some("10s"), "{name}");
    }
    assert_eq!(config_mounts[0], config_mounts[1], "the same proxy.toml for both");
    assert_eq!(env_files[0], env_files[1], "the same env_file for both");
    assert!(!env_files[0].is_empty(), "the credentials come from an env_file");
    assert_eq!(envs[0], envs[1], "the same environment for both");

    // What each container gets provides every variable proxy.toml reads, and the env file
    // sets nothing it does not read (the AWS_* variables are object_store's).
    let (_, svc) = &services[0];
    let env = c.container_env(svc);
    for var in required_vars(&c.proxy_toml) {
        assert!(
            env.contains_key(&var),
            "proxy.toml reads ${{{var}}}, which the container lacks"
        );
    }
    for f in &env_files[0] {
        let example = repo(&format!("{COMPOSE_DIR}/{f}.example"));
        all_read(env_file(&example).into_iter().map(|(k, _)| k), &c.proxy_toml, f);
    }
    for key in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
    ] {
        assert!(env.contains_key(key), "the container gets {key}");
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes

struct Manifests {
    secret: Value,
    config_map: Value,
    daemon_set: Value,
    image: Image,
}

fn manifests() -> Manifests {
    let text = repo(KUBERNETES);
    let mut by_kind: BTreeMap<String, Value> = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{KUBERNETES}: {e}"));
        if v.is_null() {
            continue;
        }
        let kind = v["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{KUBERNETES}: a document without `kind`: {v:?}"))
            .to_owned();
        assert!(v["apiVersion"].is_string(), "{kind} has an apiVersion");
        assert!(v["metadata"]["name"].is_string(), "{kind} has a name");
        assert!(
            v["metadata"]["namespace"].is_null(),
            "{kind} names no namespace (applied with -n)"
        );
        assert!(by_kind.insert(kind.clone(), v).is_none(), "one {kind}");
    }
    let names: Vec<&str> = by_kind.keys().map(String::as_str).collect();
    assert_eq!(names, ["ConfigMap", "DaemonSet", "Secret"], "{KUBERNETES}");
    Manifests {
        secret: by_kind.remove("Secret").unwrap(),
        config_map: by_kind.remove("ConfigMap").unwrap(),
        daemon_set: by_kind.remove("DaemonSet").unwrap(),
        image: parse_image(&repo("deploy/Dockerfile")),
    }
}

impl Manifests {
    fn pod(&self) -> &Value {
        &self.daemon_set["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod()["containers"]
            .as_sequence()
            .expect("the DaemonSet has containers");
        assert_eq!(containers.len(), 1, "one container");
        &containers[0]
    }

    fn proxy_toml(&self) -> String {
        self.config_map["data"]["proxy.toml"]
            .as_str()
            .expect("the ConfigMap has a proxy.toml key")
            .to_owned()
    }

    /// The container's security setting `key`: its own, else the pod's.
    fn security(&self, key: &str) -> &Value {
        let own = &self.container()["securityContext"][key];
        if own.is_null() {
            &self.pod()["securityContext"][key]
        } else {
            own
        }
    }

    /// The container port a probe's `port` names (a number, or a port's name).
    fn port_named(&self, port: &Value) -> u64 {
        if let Some(n) = port.as_u64() {
            return n;
        }
        let name = port.as_str().expect("a port number or name");
        self.ports()
            .into_iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port is named {name}"))
    }

    fn ports(&self) -> Vec<&Value> {
        self.container()["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .collect()
    }

    /// What the pod's process gets: the image's ENV, the Secret (envFrom), the container's
    /// own `env` values.
    fn pod_env(&self) -> BTreeMap<String, String> {
        let mut env = self.image.env.clone();
        for (k, v) in self.secret["stringData"].as_mapping().into_iter().flatten() {
            env.insert(yaml_text(k), yaml_text(v));
        }
        for e in self.container()["env"].as_sequence().into_iter().flatten() {
            let name = e["name"].as_str().expect("an env entry has a name");
            let value = e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("env {name}: a string value (quoted in YAML)"));
            env.insert(name.to_owned(), value.to_owned());
        }
        env
    }
}

#[test]
fn the_kubernetes_manifests_fit_together_and_fit_the_image() {
    let m = manifests();
    let ds = &m.daemon_set;
    assert_eq!(ds["apiVersion"].as_str(), Some("apps/v1"));
    let c = m.container();

    // The Secret: Opaque, the four AWS variables of the bucket, strings only.
    assert_eq!(m.secret["type"].as_str(), Some("Opaque"));
    let data = m.secret["stringData"]
        .as_mapping()
        .expect("the Secret's values are in stringData");
    for (k, v) in data {
        assert!(
            v.is_string(),
            "stringData {}: a string (quoted in YAML)",
            yaml_text(k)
        );
    }
    let keys: BTreeSet<String> = data.keys().map(yaml_text).collect();
    for key in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
    ] {
        assert!(keys.contains(key), "the Secret has {key}: {keys:?}");
    }
    let secret_name = m.secret["metadata"]["name"].as_str().unwrap();
    let env_from: Vec<&str> = c["envFrom"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|e| e["secretRef"]["name"].as_str())
        .collect();
    assert_eq!(
        env_from,
        [secret_name],
        "the container's environment comes from the Secret"
    );

    // The selector selects the pods.
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    let selector = ds["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("the DaemonSet has matchLabels");
    for (k, v) in selector {
        assert_eq!(
            &labels[yaml_text(k).as_str()],
            v,
            "the pods carry the selector's labels"
        );
    }

    // The ConfigMap where the image reads proxy.toml: the whole directory (a subPath mount
    // never sees an update), read-only.
    assert!(c["command"].is_null(), "the image's ENTRYPOINT runs");
    let args = c["args"].as_sequence().map(|a| a.iter().map(yaml_text).collect());
    let config = config_path(&m.image, args);
    let cm_name = m.config_map["metadata"]["name"].as_str().unwrap();
    let volume = m.pod()["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|v| v["configMap"]["name"].as_str() == Some(cm_name))
        .expect("a volume of the ConfigMap");
    assert!(
        volume["configMap"]["items"].is_null(),
        "every key, under its own name"
    );
    let volume_name = volume["name"].as_str().unwrap();
    let mount = c["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|v| v["name"].as_str() == Some(volume_name))
        .expect("the ConfigMap's volume is mounted");
    assert!(
        mount["subPath"].is_null(),
        "the directory is mounted, not a subPath"
    );
    assert_eq!(mount["readOnly"].as_bool(), Some(true), "read-only");
    let mount_path = mount["mountPath"].as_str().unwrap().trim_end_matches('/');
    let (config_dir, config_file) = config.rsplit_once('/').unwrap();
    assert_eq!(mount_path, config_dir, "mounted where the image reads {config}");
    assert!(
        m.config_map["data"][config_file].is_string(),
        "the ConfigMap has the key {config_file}"
    );
    let toml = m.proxy_toml();

    // The nodes' 443 and 80 onto the listeners of the ConfigMap's proxy.toml; the metrics
    // listener stays off the node.
    let https = port_of(&toml_required(&toml, "ConfigMap", "listen", "https"));
    let http = port_of(&toml_required(&toml, "ConfigMap", "listen", "http"));
    let metrics_addr = toml_required(&toml, "ConfigMap", "listen", "metrics");
    let metrics = port_of(&metrics_addr);
    for (host, listener) in [(443, https), (80, http)] {
        let p = m
            .ports()
            .into_iter()
            .find(|p| p["hostPort"].as_u64() == Some(host))
            .unwrap_or_else(|| panic!("the node's port {host} is a hostPort"));
        assert_eq!(
            p["containerPort"].as_u64(),
            Some(listener),
            "hostPort {host} reaches the listener on {listener}"
        );
        assert_ne!(p["protocol"].as_str(), Some("UDP"));
    }
    if https != 443 {
        assert_eq!(
            toml_value(&toml, "listen", "public_https_port").as_deref(),
            Some("443"),
            "redirects name the balancer's 443, not the pod's {https}"
        );
    }
    for p in m.ports() {
        if p["containerPort"].as_u64() == Some(metrics) {
            assert!(p["hostPort"].is_null(), "the metrics listener is not on the node");
        }
    }

    // Probes on /healthz of the metrics listener, which must listen on the pod's address.
    assert!(
        !metrics_addr.starts_with("127.") && !metrics_addr.starts_with("[::1]"),
        "the kubelet probes the pod's address, not loopback: {metrics_addr}"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some("/healthz"), "{probe}");
        assert_eq!(
            m.port_named(&get["port"]),
            metrics,
            "{probe} on the metrics listener"
        );
    }

    // The image's user; a capability only for a port below 1024.
    assert_eq!(m.security("runAsUser").as_u64(), Some(u64::from(m.image.uid)));
    assert_eq!(m.security("runAsGroup").as_u64(), Some(u64::from(m.image.gid)));
    assert_eq!(m.security("runAsNonRoot").as_bool(), Some(true));
    let caps = &c["securityContext"]["capabilities"];
    let added = strings(&caps["add"]);
    let privileged = m
        .ports()
        .iter()
        .any(|p| p["containerPort"].as_u64().is_some_and(|n| n < 1024));
    if privileged {
        // The binary's file capability: kept in the bounding set, and not disabled by
        // no_new_privs.
        assert!(
            added.iter().any(|a| a == "NET_BIND_SERVICE"),
            "a listener below 1024 needs NET_BIND_SERVICE"
        );
        assert_ne!(
            c["securityContext"]["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "no_new_privs would disable the binary's cap_net_bind_service"
        );
    } else {
        assert!(
            added.is_empty(),
            "no listener below 1024, no capability: {added:?}"
        );
    }

    // Resources requested; SIGKILL after the gateway's grace period.
    for r in ["cpu", "memory"] {
        assert!(!c["resources"]["requests"][r].is_null(), "a {r} request");
    }
    let grace = seconds(&toml_required(&toml, "ConfigMap", "server", "grace_period"));
    let kill = m.pod()["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    assert!(
        kill > grace,
        "the kubelet's SIGKILL ({kill} s) after grace_period ({grace} s)"
    );

    // The pod's environment provides every variable the ConfigMap's proxy.toml reads; the
    // Secret sets nothing it does not read (the AWS_* variables are object_store's).
    let env = m.pod_env();
    for var in required_vars(&toml) {
        assert!(
            env.contains_key(&var),
            "proxy.toml reads ${{{var}}}, which the pod lacks"
        );
    }
    all_read(keys, &toml, "the Secret");
}

/// The two examples describe one setup: the same shared storage, lease, PROXY protocol and
/// trusted proxies (the ConfigMap differs in its ports and upstreams).
#[test]
fn the_compose_and_kubernetes_configurations_share_the_same_acme_and_balancer_settings() {
    let compose = compose().proxy_toml;
    let pod = manifests().proxy_toml();
    for (section, key) in [
        ("acme", "storage"),
        ("acme", "lease_ttl"),
        ("acme", "poll_interval"),
        ("listen", "proxy_protocol"),
        ("forwarding", "trusted_proxies"),
        ("acme.certificates", "challenge"),
    ] {
        let a = toml_required(&compose, "several-instances/proxy.toml", section, key);
        let b = toml_required(&pod, "the ConfigMap", section, key);
        assert_eq!(a, b, "[{section}] {key}");
    }
    assert_eq!(
        toml_value(&compose, "listen", "proxy_protocol").as_deref(),
        Some("true")
    );
    let trusted = toml_required(&compose, "proxy.toml", "forwarding", "trusted_proxies");
    assert_ne!(
        trusted.replace(' ', ""),
        "[]",
        "PROXY headers are accepted from someone"
    );
    assert_eq!(
        toml_value(&compose, "acme.certificates", "challenge").as_deref(),
        Some("dns-01"),
        "DNS-01 is the challenge for several instances"
    );
}

// ---------------------------------------------------------------------------------------
// gateway check

/// `gateway check --config FILE` with exactly `env` (and PATH).
fn check(file: &Path, env: &BTreeMap<String, String>) -> Output {
    let mut cmd = Command::new(harness::gateway::binary());
    cmd.arg("check")
        .arg("--config")
        .arg(file)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(env);
    harness::run_cmd(&mut cmd, Duration::from_secs(60))
}

fn assert_checked(what: &str, out: &Output) {
    let text = harness::gateway::text(out);
    assert!(out.status.success(), "{what}: gateway check refused it:\n{text}");
    assert!(text.contains(": ok ("), "{what}:\n{text}");
}

/// Depends on the configuration keys of several instances being accepted: `[acme] storage =
/// "s3://..."`, `lease_ttl`, `poll_interval` and `[listen] proxy_protocol`. Until the
/// parser knows them, `gateway check` refuses both files (unknown keys) and this test fails.
#[test]
fn both_configurations_pass_gateway_check_with_the_environment_they_get() {
    let c = compose();
    let services = c.services();
    let (name, svc) = &services[0];
    let file = repo_path(&format!("{COMPOSE_DIR}/proxy.toml"));
    assert_checked(
        &format!("{COMPOSE_DIR}/proxy.toml as {name}"),
        &check(&file, &c.container_env(svc)),
    );

    let m = manifests();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, m.proxy_toml()).unwrap();
    assert_checked(
        "the ConfigMap's proxy.toml in the pod",
        &check(&file, &m.pod_env()),
    );
}

/// Depends on `s3://` storage being implemented. Without it `storage =
/// "s3://my-bucket/gateway-acme"` is an ordinary relative path, a directory
/// `s3:/my-bucket/gateway-acme` next to proxy.toml: `gateway check` accepts it (so the test
/// above proves nothing about the bucket), and `gateway run` cannot create it on the
/// read-only configuration mount.
#[test]
fn the_s3_storage_is_a_bucket_not_a_directory_next_to_proxy_toml() {
    let c = compose();
    let services = c.services();
    let m = manifests();
    for (what, text, env) in [
        (
            "several-instances/proxy.toml",
            c.proxy_toml.clone(),
            c.container_env(services[0].1),
        ),
        ("the ConfigMap's proxy.toml", m.proxy_toml(), m.pod_env()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("proxy.toml");
        std::fs::write(&file, text).unwrap();
        let cfg = gateway_config::load_with_env(&file, &|name: &str| env.get(name).cloned())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let acme = format!("{:?}", cfg.acme.expect("an [acme] section"));
        // The failure: the URL joined onto the file's directory, `<dir>/s3://my-bucket/...`.
        let joined = dir.path().join("s3:").display().to_string();
        assert!(
            !acme.contains(&joined),
            "{what}: `s3://` storage is read as a directory next to proxy.toml: {acme}"
        );
    }
}

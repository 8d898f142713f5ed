#![allow(dead_code)] // each test uses a part
//! The deployment of deploy/Dockerfile and deploy/docker-compose.prod.yml (both parsed),
//! reproduced under a temporary root for `deploy.rs`: the image's directories with their
//! owners and modes (a new named volume starts as the image's directory), the configuration
//! directory as the admin's read-only bind mount, and the gateway run as the image's user.

use crate::harness::{self, ProcessGuard};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

pub fn repo(path: &str) -> String {
    std::fs::read_to_string(repo_path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

// ---------------------------------------------------------------------------------------
// The image, as deploy/Dockerfile describes it (its final stage).

/// A directory the image creates: `install -d -m MODE -o UID -g GID PATH...`.
#[derive(Debug, Clone)]
pub struct ImageDir {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug)]
pub struct Image {
    pub uid: u32,
    pub gid: u32,
    pub env: BTreeMap<String, String>,
    pub dirs: Vec<ImageDir>,
    pub cmd: Vec<String>,
    pub workdir: String,
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
pub fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                let (op, rest) = current.split_once(' ').unwrap_or((current.as_str(), ""));
                out.push((op.to_ascii_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

pub fn owner_id(s: &str) -> u32 {
    match s {
        "root" => 0,
        n => n
            .parse()
            .unwrap_or_else(|_| panic!("the Dockerfile names owner `{n}`: use numeric ids")),
    }
}

pub fn parse_image(text: &str) -> Image {
    let all = instructions(text);
    // The final stage: after the last FROM.
    let last_from = all.iter().rposition(|(op, _)| op == "FROM").expect("a FROM");
    let stage = &all[last_from..];
    let mut image = Image {
        uid: 0,
        gid: 0,
        env: BTreeMap::new(),
        dirs: Vec::new(),
        cmd: Vec::new(),
        workdir: "/".into(),
    };
    for (op, rest) in stage {
        match op.as_str() {
            "USER" => {
                let (u, g) = rest.split_once(':').unwrap_or((rest.as_str(), rest.as_str()));
                image.uid = u
                    .parse()
                    .expect("USER is a numeric uid:gid (as compose's `user`)");
                image.gid = g.parse().expect("USER is a numeric uid:gid");
            }
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("ENV NAME=value");
                    image.env.insert(k.to_owned(), v.trim_matches('"').to_owned());
                }
            }
            "WORKDIR" => image.workdir = rest.clone(),
            "CMD" => image.cmd = serde_json::from_str(rest).expect("CMD in exec form"),
            "RUN" => {
                for command in rest.split("&&") {
                    let words: Vec<&str> = command.split_whitespace().collect();
                    if words.first() != Some(&"install") || !words.contains(&"-d") {
                        continue;
                    }
                    let (mut mode, mut uid, mut gid, mut paths) = (0o755, 0, 0, Vec::new());
                    let mut it = words[1..].iter();
                    while let Some(w) = it.next() {
                        match *w {
                            "-d" => {}
                            "-m" => mode = u32::from_str_radix(it.next().unwrap(), 8).unwrap(),
                            "-o" => uid = owner_id(it.next().unwrap()),
                            "-g" => gid = owner_id(it.next().unwrap()),
                            p => paths.push(p.to_owned()),
                        }
                    }
                    for path in paths {
                        image.dirs.push(ImageDir { path, mode, uid, gid });
                    }
                }
            }
            _ => {}
        }
    }
    image
}

// ---------------------------------------------------------------------------------------
// The gateway service of deploy/docker-compose.prod.yml.

#[derive(Debug)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub named: bool,
}

#[derive(Debug)]
pub struct ComposeService {
    pub user: Option<String>,
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    pub cmd: Option<Vec<String>>,
}

pub fn yaml_text(v: &serde_yaml::Value) -> String {
    match v.as_str() {
        Some(s) => s.to_owned(),
        None => serde_yaml::to_string(v).unwrap().trim().to_owned(),
    }
}

pub fn parse_compose(text: &str) -> ComposeService {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).expect("the compose file is YAML");
    let svc = &doc["services"]["gateway"];
    assert!(svc.is_mapping(), "the compose file has a `gateway` service");
    let declared: Vec<String> = doc["volumes"]
        .as_mapping()
        .map(|m| m.keys().map(yaml_text).collect())
        .unwrap_or_default();
    let mut env = BTreeMap::new();
    if let Some(m) = svc["environment"].as_mapping() {
        for (k, v) in m {
            env.insert(yaml_text(k), yaml_text(v));
        }
    } else if let Some(list) = svc["environment"].as_sequence() {
        for item in list {
            let s = yaml_text(item);
            let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    let mut mounts = Vec::new();
    for v in svc["volumes"].as_sequence().into_iter().flatten() {
        let s = v
            .as_str()
            .expect("volumes in the short syntax (SOURCE:TARGET[:ro])");
        let parts: Vec<&str> = s.split(':').collect();
        assert!(parts.len() >= 2, "volume `{s}` names a source and a target");
        let named = !parts[0].starts_with('.') && !parts[0].starts_with('/');
        if named {
            assert!(
                declared.iter().any(|d| d == parts[0]),
                "the named volume {} is declared under the top-level `volumes`",
                parts[0]
            );
        }
        mounts.push(Mount {
            source: parts[0].to_owned(),
            target: parts[1].to_owned(),
            read_only: parts.get(2).is_some_and(|m| m.split(',').any(|o| o == "ro")),
            named,
        });
    }
    let cmd = svc["command"]
        .as_sequence()
        .map(|s| s.iter().map(yaml_text).collect());
    ComposeService {
        user: svc["user"].as_str().map(str::to_owned),
        env,
        mounts,
        cmd,
    }
}

/// `${NAME}`, `${NAME:-default}`, `${NAME:?message}` of a compose value, from `dotenv`.
pub fn compose_expand(value: &str, dotenv: &[(&str, &str)]) -> String {
    let Some(at) = value.find("${") else {
        return value.to_owned();
    };
    let end = value[at..].find('}').map(|e| at + e).expect("a closed ${...}");
    let inner = &value[at + 2..end];
    let name_end = inner.find([':', '-', '?']).unwrap_or(inner.len());
    let name = &inner[..name_end];
    let default = inner.split_once(":-").map(|(_, d)| d).unwrap_or("");
    let set = dotenv.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let got = set.filter(|v| !v.is_empty()).unwrap_or(default);
    format!(
        "{}{got}{}",
        &value[..at],
        compose_expand(&value[end + 1..], dotenv)
    )
}

// ---------------------------------------------------------------------------------------
// The layout reproduced under a temporary root.

/// A container path under the temporary root.
pub fn host(root: &Path, container: &str) -> PathBuf {
    root.join(container.trim_start_matches('/'))
}

/// Absolute container paths in a value or argument become paths under `root`.
pub fn rewrite(root: &Path, value: &str) -> String {
    if value.starts_with('/') {
        host(root, value).display().to_string()
    } else {
        value.to_owned()
    }
}

pub fn chown(path: &Path, uid: u32, gid: u32) {
    if is_root() {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
    }
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The uid/gid the test runs the gateway as: the image's, or (not root) the test's own.
pub fn run_as(image: &Image) -> (u32, u32) {
    if is_root() {
        (image.uid, image.gid)
    } else {
        eprintln!(
            "not root: the gateway runs as this test's uid {} instead of the image's {} (same layout, owners not changed)",
            nix::unistd::geteuid(),
            image.uid
        );
        (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
    }
}

/// The deployment under a temporary root: the image's directories with their owners and
/// modes (a new named volume starts as the image's directory), the configuration directory
/// as the admin's read-only bind mount (root, 0755, proxy.toml 0644), and the binary at
/// /usr/local/bin/gateway.
pub struct Layout {
    pub root: tempfile::TempDir,
    pub logs: tempfile::TempDir,
    pub image: Image,
    pub compose: ComposeService,
    pub config_dir: String,
}

impl Layout {
    pub fn new(proxy_toml: &str) -> Layout {
        let image = parse_image(&repo("deploy/Dockerfile"));
        let compose = parse_compose(&repo("deploy/docker-compose.prod.yml"));
        let root = tempfile::tempdir().unwrap();
        chmod(root.path(), 0o755);
        for d in &image.dirs {
            let p = host(root.path(), &d.path);
            std::fs::create_dir_all(&p).unwrap();
            // Parents as an image has them: root's, 0755.
            let mut parent = p.parent();
            while let Some(dir) = parent.filter(|d| d.starts_with(root.path()) && *d != root.path()) {
                chmod(dir, 0o755);
                parent = dir.parent();
            }
        }
        for d in &image.dirs {
            let p = host(root.path(), &d.path);
            chown(&p, d.uid, d.gid);
            chmod(&p, d.mode);
        }
        let config_mount = compose
            .mounts
            .iter()
            .find(|m| !m.named && image.cmd.iter().any(|a| a.starts_with(&format!("{}/", m.target))))
            .expect("a bind mount holds the configuration file the image's CMD reads");
        let config_dir = host(root.path(), &config_mount.target);
        std::fs::create_dir_all(&config_dir).unwrap();
        chown(&config_dir, 0, 0);
        chmod(&config_dir, 0o755);
        let config_file = config_dir.join("proxy.toml");
        std::fs::write(&config_file, proxy_toml).unwrap();
        chown(&config_file, 0, 0);
        chmod(&config_file, 0o644);
        let bin = host(root.path(), "/usr/local/bin/gateway");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        chmod(bin.parent().unwrap(), 0o755);
        if std::fs::hard_link(harness::gateway::binary(), &bin).is_err() {
            std::fs::copy(harness::gateway::binary(), &bin).unwrap();
        }
        chmod(&bin, 0o755);
        Layout {
            root,
            logs: tempfile::tempdir().unwrap(),
            config_dir: config_mount.target.clone(),
            image,
            compose,
        }
    }

    pub fn path(&self, container: &str) -> PathBuf {
        host(self.root.path(), container)
    }

    /// The container's environment: the image's ENV, then compose's `environment` (its
    /// `${...}` from `dotenv`), then `extra` (test addresses); container paths rewritten.
    pub fn env(&self, dotenv: &[(&str, &str)], extra: &[(&str, String)]) -> BTreeMap<String, String> {
        let mut env = self.image.env.clone();
        for (k, v) in &self.compose.env {
            env.insert(k.clone(), compose_expand(v, dotenv));
        }
        for (k, v) in extra {
            env.insert(k.to_string(), v.clone());
        }
        env.into_iter()
            .map(|(k, v)| {
                let v = rewrite(self.root.path(), &v);
                (k, v)
            })
            .collect()
    }

    /// Starts the container's command as the image's user, stdout/stderr appended to logs.
    pub fn start(&self, env: &BTreeMap<String, String>) -> ProcessGuard {
        let (uid, gid) = run_as(&self.image);
        let args = self.compose.cmd.clone().unwrap_or_else(|| self.image.cmd.clone());
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.logs.path().join(name))
                .unwrap()
        };
        let mut cmd = Command::new(self.path("/usr/local/bin/gateway"));
        cmd.args(args.iter().map(|a| rewrite(self.root.path(), a)))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(env)
            .current_dir(self.path(&self.image.workdir))
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"));
        if is_root() {
            cmd.uid(uid).gid(gid);
        }
        ProcessGuard::spawn(&mut cmd, "the gateway (compose layout)")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr.log")).unwrap_or_default()
    }

    /// The run directory the container's command names (`--run-dir`).
    pub fn run_dir(&self) -> PathBuf {
        let args = self.compose.cmd.clone().unwrap_or_else(|| self.image.cmd.clone());
        let at = args
            .iter()
            .position(|a| a == "--run-dir")
            .expect("CMD names --run-dir");
        self.path(&args[at + 1])
    }
}

/// The shipped proxy.toml with its compose upstream names pointed at a closed loopback port
/// (nothing else changed: `[acme]` is the shipped one).
pub fn shipped_proxy_toml() -> String {
    let mut text = repo("proxy.toml");
    for up in [
        "api:3001",
        "n8n:5678",
        "open-webui:8080",
        "nodered:1880",
        "grafana:3000",
    ] {
        let from = format!("address = \"{up}\"");
        assert!(text.contains(&from), "the shipped file names {up}");
        text = text.replace(&from, "address = \"127.0.0.1:9\"");
    }
    text
}

//! Child processes with guards and deadlines.
//!
//! Every process a test starts runs in a process group of its own and belongs to a guard
//! from the moment it is spawned: dropping the guard (the test ends, passes or panics) kills
//! the whole group. Every wait for a command has a deadline. A tool that is not installed
//! fails the test with the Debian package that provides it, never skips it.
//!
//! The groups alive are also killed when the test process gets SIGINT, SIGTERM or SIGHUP
//! (Ctrl-C, a CI job cancelled): in groups of their own they would no longer get the
//! terminal's signal. A test process killed with SIGKILL cannot clean up.

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use std::io::{Read, Seek, SeekFrom};
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// The process groups started by this test process and not yet killed.
static GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Records `group` (a process group this test started) for the signal watcher, which it
/// starts on first use.
pub fn register(group: i32) {
    watch_signals();
    GROUPS.lock().unwrap_or_else(|e| e.into_inner()).push(group);
}

pub fn unregister(group: i32) {
    GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|g| *g != group);
}

/// On SIGINT, SIGTERM or SIGHUP: kill every group still registered, then exit as the
/// signal would have.
fn watch_signals() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let watcher = std::thread::Builder::new()
            .name("kill-child-groups".into())
            .spawn(|| {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                let code = rt.block_on(async {
                    use tokio::signal::unix::{signal, SignalKind};
                    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                        signal(SignalKind::interrupt()),
                        signal(SignalKind::terminate()),
                        signal(SignalKind::hangup()),
                    ) else {
                        return None;
                    };
                    tokio::select! {
                        _ = int.recv() => Some(130),
                        _ = term.recv() => Some(143),
                        _ = hup.recv() => Some(129),
                    }
                });
                let Some(code) = code else {
                    return;
                };
                let groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner()).clone();
                for g in groups {
                    let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
                }
                eprintln!("test run interrupted: killed the processes it had started");
                std::process::exit(code);
            });
        if let Err(e) = watcher {
            eprintln!("cannot watch for signals ({e}): an interrupted run may leave processes behind");
        }
    });
}

/// True while `pid` is a child of this process that has not been reaped: until then its pid,
/// and so the group it leads, cannot belong to another process.
pub fn not_reaped(pid: Pid) -> bool {
    waitid(
        Id::Pid(pid),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
    )
    .is_ok()
}

/// Kills the process group `child` leads (only while `child` is not reaped: see
/// [`not_reaped`]; nothing happens to a group it does not lead), then `child`, and reaps it.
pub fn kill_child_group(child: &mut Child) {
    let pid = Pid::from_raw(child.id() as i32);
    if not_reaped(pid) {
        let _ = killpg(pid, Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
    unregister(pid.as_raw());
}

/// A child process leading its own process group, killed with its group on drop.
///
/// It dereferences to the [`Child`], so `try_wait`, `id`, `kill`, `wait` work as on one.
pub struct ProcessGuard {
    child: Child,
    what: String,
}

impl ProcessGuard {
    /// Spawns `cmd` in a new process group (`what` names it in messages).
    pub fn spawn(cmd: &mut Command, what: &str) -> ProcessGuard {
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({:?}): {e}", cmd.get_program()));
        Self::adopt(child, what)
    }

    /// Guards a child already spawned with `process_group(0)`.
    pub fn adopt(child: Child, what: &str) -> ProcessGuard {
        register(child.id() as i32);
        ProcessGuard {
            child,
            what: what.to_owned(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits up to `limit` for the process to exit (reaping it); `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the whole group (while the leader is not reaped, see [`not_reaped`]), then the
    /// leader, and reaps it.
    pub fn kill_group(&mut self) {
        kill_child_group(&mut self.child);
    }

    pub fn what(&self) -> &str {
        &self.what
    }
}

impl Deref for ProcessGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for ProcessGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// A process group this test process did not spawn itself (the successor a `gateway
/// upgrade` starts, in a group of its own), killed on drop while its leader still runs
/// `exe`: a pid that ended and was reused by an unrelated program is left alone.
pub struct GroupGuard {
    pid: i32,
    exe: PathBuf,
}

impl GroupGuard {
    pub fn new(pid: i32, exe: &Path) -> GroupGuard {
        register(pid);
        GroupGuard {
            pid,
            exe: exe.to_owned(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// True while the process runs the expected program.
    pub fn alive(&self) -> bool {
        let Ok(exe) = std::fs::read_link(format!("/proc/{}/exe", self.pid)) else {
            return false;
        };
        let canonical = |p: &Path| p.canonicalize().ok();
        let same = exe == self.exe
            || canonical(exe.as_path()).is_some_and(|e| Some(e) == canonical(self.exe.as_path()));
        same && kill(Pid::from_raw(self.pid), None).is_ok()
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.alive() {
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        unregister(self.pid);
    }
}

/// The program and arguments of `cmd`, for messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn read_back(mut f: std::fs::File) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_end(&mut v);
    v
}

/// Runs `cmd` to completion like `Command::output()`, but for at most `limit`: stdin is
/// empty, stdout and stderr are captured (into files, so a process it leaves behind cannot
/// hold the test up), the process gets a group of its own. When the limit passes the group
/// is killed and the test fails, showing what the command had printed.
pub fn run_cmd(cmd: &mut Command, limit: Duration) -> Output {
    let what = describe(cmd);
    let out = tempfile::tempfile().expect("a temporary file for stdout");
    let err = tempfile::tempfile().expect("a temporary file for stderr");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("stdout file"))
        .stderr(err.try_clone().expect("stderr file"));
    let mut guard = ProcessGuard::spawn(cmd, &what);
    let status = guard.wait_exit(limit);
    if status.is_none() {
        guard.kill_group();
    }
    let (stdout, stderr) = (read_back(out), read_back(err));
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "`{what}` did not finish within {limit:?} and was killed\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// [`run_cmd`] from async code: the wait runs on a blocking thread, so the test's other
/// tasks (load loops, upstreams) keep running meanwhile.
pub async fn run_cmd_async(cmd: Command, limit: Duration) -> Output {
    let task = tokio::task::spawn_blocking(move || {
        let mut cmd = cmd;
        run_cmd(&mut cmd, limit)
    });
    match task.await {
        Ok(out) => out,
        Err(e) => match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(e) => panic!("the command's thread failed: {e}"),
        },
    }
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where `bin` is installed: `$PATH`, then the sbin directories (nginx lives in /usr/sbin,
/// often not in a user's `$PATH`).
pub fn find_tool(bin: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/local/sbin",
        "/usr/sbin",
        "/sbin",
        "/usr/local/bin",
        "/usr/bin",
        "/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(bin)).find(|p| is_executable(p))
}

/// The path of `bin`, which this test needs; a test never passes without it: when it is
/// missing the test fails, naming the Debian package to install.
pub fn require_tool(bin: &str, package: &str) -> PathBuf {
    find_tool(bin).unwrap_or_else(|| {
        panic!(
            "this test needs `{bin}`, which is not installed: install the Debian package \
             `{package}` (`apt-get install {package}`; `.ci/run` installs every package the tests use)"
        )
    })
}

// The guards and waits below keep the API of the `ops-safety` branch's `harness::process`
// (lifecycle tests), killing whole process groups too.

/// Interval of the exit checks.
const POLL: Duration = Duration::from_millis(10);

/// A child process, killed (SIGKILL, with the process group it leads) and reaped when
/// dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill_child_group(&mut self.0);
    }
}

/// A process that is not this test's child, killed (SIGKILL, with the process group it
/// leads) when dropped unless it is gone.
pub struct KillPid(pub i32);

impl Drop for KillPid {
    fn drop(&mut self) {
        if !gone(self.0) {
            let pid = Pid::from_raw(self.0);
            if nix::unistd::getpgid(Some(pid)) == Ok(pid) {
                let _ = killpg(pid, Signal::SIGKILL);
            }
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// Whether process `pid` has exited: no `/proc/<pid>` any more, or a zombie not yet reaped
/// (proc(5): the state is the field after the `)` that closes the command name).
pub fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Waits up to `limit` for `child` to exit; `None` when it is still running (left as is).
pub async fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits up to `limit` for process `pid` (not a child) to be gone; whether it is.
pub async fn wait_gone(pid: i32, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if gone(pid) {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every process, but this one, whose command line has `arg` as one of its arguments (such
/// as a test's own run directory), from `/proc/<pid>/cmdline` (NUL-separated).
pub fn with_arg(arg: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|d| d.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && !gone(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect()
}

/// Kills (SIGKILL) every process [`with_arg`] `self.0` when dropped: the backstop for
/// processes a failed step left behind without telling their pid (a gateway started by an
/// interrupted `gateway upgrade`).
pub struct KillAllWithArg(pub String);

impl Drop for KillAllWithArg {
    fn drop(&mut self) {
        for pid in with_arg(&self.0) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

//! A harness that runs the real static `nix2gpu-init` binary, as PID 1 of fresh PID and mount
//! namespaces (`unshare --pid --fork --mount-proc`) or as a plain process (subreaper mode), and
//! watches it from outside: its output line by line, its host pid, its exit code.
//!
//! Every wait is bounded: a test that would hang fails instead, with everything the init
//! printed so far. Namespaces need root; without it the tests fail, they do not skip.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub mod docker;
pub mod recorded;

/// The default bound for any wait in a test.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Checks `done` every 10 ms until it holds; fails the test with `why()` after [`PATIENCE`].
/// For what has no event to wait on (the contents of /proc, a count of lines).
pub fn eventually(mut done: impl FnMut() -> bool, mut why: impl FnMut() -> String) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{}", why());
        thread::sleep(Duration::from_millis(10));
    }
}

/// The init binary under test: `$NIX2GPU_INIT_BIN`, set by `cargo xtask test` to the static
/// release build.
pub fn init_binary() -> PathBuf {
    let path = std::env::var_os("NIX2GPU_INIT_BIN").map(PathBuf::from).expect(
        "NIX2GPU_INIT_BIN is not set: run the tests with `cargo xtask test`, which builds the static binary",
    );
    assert!(path.is_file(), "NIX2GPU_INIT_BIN={} does not exist", path.display());
    path
}

/// Directories covered with a fresh tmpfs inside the test's mount namespace, so the init's
/// boot steps (runtime dirs under /run and /var) never touch the machine running the tests.
const PRIVATE_DIRS: [&str; 2] = ["/run", "/var"];

/// How to start the init.
#[derive(Default)]
pub struct Launch {
    args: Vec<String>,
    env: Vec<(String, String)>,
    as_plain_process: bool,
    socket: Option<String>,
    /// Shell steps run inside the namespaces after the tmpfs over [`PRIVATE_DIRS`], before the
    /// init starts: more private mounts, and files written into them.
    setup: Vec<String>,
    /// Mount points made private so far: files may only be written under these.
    private: Vec<PathBuf>,
    network: bool,
    /// A program (with its arguments) that runs the init, e.g. `setpriv --groups=...`.
    wrapper: Vec<String>,
}

/// A control socket path no other init of this test run uses.
pub fn fresh_socket_path() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SOCKETS: AtomicUsize = AtomicUsize::new(0);
    let n = SOCKETS.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("nix2gpu-test-{}-{n}.sock", std::process::id())).display().to_string()
}

impl Launch {
    /// Runs `command` (a shell command) inside the init's namespaces before it starts, after
    /// the tmpfs mounts: more private mounts, files the test needs there.
    pub fn setup(mut self, command: &str) -> Self {
        self.setup.push(command.to_string());
        self
    }

    /// The init with these arguments (e.g. `["--", "sh", "-c", "exit 3"]`).
    pub fn new<S: AsRef<str>>(args: &[S]) -> Self {
        Self { args: args.iter().map(|a| a.as_ref().to_string()).collect(), ..Self::default() }
    }

    /// Adds an environment variable for the init.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the init as an ordinary child of the test (not PID 1): subreaper mode.
    pub fn as_plain_process(mut self) -> Self {
        self.as_plain_process = true;
        self
    }

    /// Uses this control socket path instead of a fresh one ("" means the init's default,
    /// /run/nix2gpu/control.sock, private to its mount namespace).
    pub fn socket(mut self, path: &str) -> Self {
        self.socket = Some(path.to_string());
        self
    }

    /// Covers `dir` (which must exist) with an empty tmpfs of the same mode, inside the init's
    /// mount namespace: what the init writes there never reaches the machine.
    pub fn private_dir(mut self, dir: &str) -> Self {
        let mode = private_mode(dir);
        self.setup.push(format!("mount -t tmpfs -o mode={mode:o} tmpfs {}", quote(dir)));
        self.private.push(PathBuf::from(dir));
        self
    }

    /// Covers `dir` with a tmpfs holding a copy of its contents: the init sees the machine's
    /// files (e.g. /etc/passwd) and may replace them (rename over /etc/shadow), privately.
    pub fn private_copy(mut self, dir: &str) -> Self {
        let mode = private_mode(dir);
        self.private.push(PathBuf::from(dir));
        let (dir, stage) = (quote(dir), "/run/.private-copy");
        self.setup.push(format!(
            "mkdir {stage} && cp -a {dir}/. {stage} && mount -t tmpfs -o mode={mode:o} tmpfs {dir} && cp -a {stage}/. {dir} && rm -rf {stage}"
        ));
        self
    }

    /// Writes `contents` to `path` before the init starts; `path` must be inside a private
    /// directory (one of [`PRIVATE_DIRS`], [`Launch::private_dir`], [`Launch::private_copy`]).
    pub fn file(mut self, path: &str, contents: &str) -> Self {
        let inside = PRIVATE_DIRS.iter().map(PathBuf::from).chain(self.private.iter().cloned());
        assert!(
            inside.into_iter().any(|dir| std::path::Path::new(path).starts_with(dir)),
            "{path} is not in a private directory: writing it would change the machine"
        );
        self.setup.push(format!("printf %s {} > {}", quote(contents), quote(path)));
        self
    }

    /// Runs the init through `argv` (a program that execs its last arguments, such as
    /// `setpriv --groups=4 --`), inside the namespaces: the init inherits what it sets up.
    pub fn wrapped(mut self, argv: &[&str]) -> Self {
        self.wrapper = argv.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Runs the init in a network namespace of its own, with only the loopback interface (up):
    /// its servers cannot clash with other tests' or the machine's. Reach them with
    /// [`Init::connect`].
    pub fn private_network(mut self) -> Self {
        self.network = true;
        self
    }

    /// Where this init's control socket is: a fresh path in the host's temp dir (visible to the
    /// test, and never shared between two inits), unless [`Launch::socket`] chose one.
    pub fn socket_path(&mut self) -> String {
        self.socket.get_or_insert_with(fresh_socket_path).clone()
    }

    /// The command that starts it, with stdio left for the caller to set.
    pub fn command(&mut self) -> Command {
        let mut command = if self.as_plain_process {
            assert!(
                self.setup.is_empty() && !self.network && self.wrapper.is_empty(),
                "private mounts, networks and wrappers need namespaces"
            );
            Command::new(init_binary())
        } else {
            let mut steps: Vec<String> =
                PRIVATE_DIRS.iter().map(|dir| format!("mount -t tmpfs tmpfs {dir}")).collect();
            if self.network {
                steps.push("ip link set lo up".into());
            }
            steps.extend(self.setup.iter().cloned());
            let mut command = Command::new("unshare");
            command.args(["--pid", "--fork", "--mount-proc", "--kill-child"]);
            if self.network {
                command.arg("--net");
            }
            command
                .args(["sh", "-c"])
                .arg(format!("{} && exec \"$@\"", steps.join(" && ")))
                .arg("sh")
                .args(&self.wrapper)
                .arg(init_binary());
            command
        };
        let socket = self.socket_path();
        command.args(&self.args).env("NIX2GPU_CONTROL_SOCKET", socket);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Starts the init with its stdout and stderr captured.
    pub fn start(mut self) -> Init {
        let mut command = self.command();
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("cannot start the init (is util-linux's unshare installed?)");
        let (sender, lines) = channel();
        forward_lines(child.stdout.take().expect("piped"), sender.clone());
        forward_lines(child.stderr.take().expect("piped"), sender);
        let socket = self.socket_path();
        Init { child, lines, seen: Vec::new(), plain: self.as_plain_process, exit_code: None, socket }
    }
}

impl Launch {
    /// Starts the init with its stdout on a pipe the test holds and reads when it wants to (a
    /// slow or stalled `docker logs` reader); [`Init`] sees only its stderr.
    pub fn start_holding_stdout(mut self) -> (Init, std::process::ChildStdout) {
        let mut command = self.command();
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("cannot start the init (is util-linux's unshare installed?)");
        let stdout = child.stdout.take().expect("piped");
        let (sender, lines) = channel();
        forward_lines(child.stderr.take().expect("piped"), sender);
        let socket = self.socket_path();
        (
            Init { child, lines, seen: Vec::new(), plain: self.as_plain_process, exit_code: None, socket },
            stdout,
        )
    }
}

/// The mode of an existing directory, for the tmpfs that covers it.
fn private_mode(dir: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(dir).unwrap_or_else(|e| panic!("{dir} cannot be made private: {e}"));
    assert!(meta.is_dir(), "{dir} is not a directory");
    meta.permissions().mode() & 0o7777
}

/// `text` as one single-quoted shell word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The controlling side of the pseudo-terminal an init was started on.
pub struct Terminal {
    master: fs::File,
}

impl Terminal {
    /// Types `text` as if at the keyboard (`"\x03"` is Ctrl-C).
    pub fn type_text(&mut self, text: &str) {
        use std::io::Write;
        self.master.write_all(text.as_bytes()).expect("the terminal is open");
    }
}

impl Launch {
    /// Starts the init on a new pseudo-terminal that is the controlling terminal of its session,
    /// as `docker run -it` does; its output is read back from the terminal.
    pub fn start_on_terminal(mut self) -> (Init, Terminal) {
        let size = nix::pty::Winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let mut command = self.command();
        let slave = fs::File::from(pty.slave);
        command.stdin(slave.try_clone().expect("dup")).stdout(slave.try_clone().expect("dup")).stderr(slave);
        // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                nix::unistd::setsid()?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("cannot start the init on a terminal");
        let master = fs::File::from(pty.master);
        let (sender, lines) = channel();
        forward_lines(master.try_clone().expect("dup"), sender);
        let socket = self.socket_path();
        let init =
            Init { child, lines, seen: Vec::new(), plain: self.as_plain_process, exit_code: None, socket };
        (init, Terminal { master })
    }
}

/// The pid of a process whose command line is exactly `argv`, if one exists.
pub fn find_process(argv: &[&str]) -> Option<i32> {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain(std::iter::once(0))).collect();
    processes()
        .keys()
        .copied()
        .find(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
}

/// Sends each line read from `source` to `sink`, from a thread of its own.
pub fn forward_lines(source: impl Read + Send + 'static, sink: Sender<String>) {
    thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            // Terminal output ends lines with \r\n.
            if sink.send(line.trim_end_matches('\r').to_string()).is_err() {
                break;
            }
        }
    });
}

/// A running init, observed from outside.
pub struct Init {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    plain: bool,
    exit_code: Option<i32>,
    socket: String,
}

impl Init {
    /// Runs `nix2gpu-init ARGS` as a client of this init's control socket; returns the exit
    /// code, stdout and stderr.
    pub fn client(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(init_binary())
            .args(args)
            .env("NIX2GPU_CONTROL_SOCKET", &self.socket)
            .output()
            .expect("the client runs");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let (code, stdout, stderr) = self.client(&["status", "--json"]);
        assert_eq!(code, 0, "status failed: {stderr}");
        serde_json::from_str(&stdout).expect("status --json is JSON")
    }

    /// The status entry of node `name`.
    pub fn node(&self, name: &str) -> serde_json::Value {
        let status = self.status();
        status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no node {name} in {status}"))
    }

    /// Waits until `check` holds for the status of node `name` (the socket may not be up yet).
    pub fn wait_for_node(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        let mut last = serde_json::Value::Null;
        loop {
            let (code, stdout, _) = self.client(&["status", "--json"]);
            if code == 0 {
                let status: serde_json::Value = serde_json::from_str(&stdout).expect("status --json is JSON");
                if let Some(node) =
                    status["nodes"].as_array().and_then(|n| n.iter().find(|n| n["name"] == name))
                {
                    if check(node) {
                        return node.clone();
                    }
                    last = node.clone();
                }
            }
            assert!(Instant::now() < deadline, "{name} never became {what}: {last}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The host pid of the process the init's namespace calls `pid` (from NSpid in /proc).
    pub fn host_pid_of(&self, pid: i64) -> i32 {
        let me = self.host_pid();
        let wanted = pid.to_string();
        processes()
            .values()
            .filter(|p| p.ppid == me)
            .map(|p| p.pid)
            .find(|host| {
                fs::read_to_string(format!("/proc/{host}/status")).is_ok_and(|status| {
                    status
                        .lines()
                        .any(|l| l.starts_with("NSpid:") && l.split_whitespace().last() == Some(&wanted))
                })
            })
            .unwrap_or_else(|| panic!("no child of the init is pid {pid} in its namespace"))
    }

    /// The host pids of every process in the init's PID namespace, the init included.
    pub fn namespace_pids(&self) -> Vec<i32> {
        let namespace = |pid: i32| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
        let ours = namespace(self.host_pid()).expect("the init is alive");
        processes().keys().copied().filter(|pid| namespace(*pid).as_ref() == Some(&ours)).collect()
    }

    /// Opens a TCP connection to `port` on 127.0.0.1 as the init sees it: inside its network
    /// namespace when it has one ([`Launch::private_network`]). A thread of the test joins that
    /// namespace only to create the socket; the connection stays usable from anywhere.
    pub fn connect(&self, port: u16) -> std::io::Result<std::net::TcpStream> {
        let namespace = fs::File::open(format!("/proc/{}/ns/net", self.host_pid()))?;
        thread::spawn(move || {
            nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNET)?;
            std::net::TcpStream::connect(("127.0.0.1", port))
        })
        .join()
        .expect("the connecting thread does not panic")
    }

    /// The control socket's path.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The init's pid on the host (unshare's child in namespace mode).
    pub fn host_pid(&self) -> i32 {
        if self.plain {
            return self.child.id() as i32;
        }
        let unshare = self.child.id();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let children =
                fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.parse().expect("pids are numbers");
            }
            assert!(Instant::now() < deadline, "unshare never started the init");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a signal to the init itself.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.host_pid()), signal).expect("the init is alive");
    }

    /// Waits for a line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        self.wait_for_line_within(needle, PATIENCE)
    }

    /// Waits at most `limit` for a line containing `needle`.
    pub fn wait_for_line_within(&mut self, needle: &str, limit: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|line| line.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line containing {needle:?} within {limit:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for a line of service `name` (however its name is padded) containing `text`.
    pub fn wait_for_service_line(&mut self, name: &str, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.output().iter().find(|line| is_service_line(line, name, text)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no `{name} | ...{text}...` line; output:\n{}",
                self.seen.join("\n")
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The text of every line service `name` wrote so far.
    pub fn service_lines(&mut self, name: &str) -> Vec<String> {
        self.output().iter().filter_map(|line| split_service_line(line, name)).collect()
    }

    /// Waits for the init to exit and returns its exit code (failing on death by signal).
    pub fn wait_exit(&mut self) -> i32 {
        self.wait_exit_within(PATIENCE)
    }

    /// Waits at most `limit` for the init to exit; kills it and fails the test otherwise.
    pub fn wait_exit_within(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("waitable") {
                self.drain_output();
                let code = status
                    .code()
                    .unwrap_or_else(|| panic!("init died by {status:?}; output:\n{}", self.seen.join("\n")));
                self.exit_code = Some(code);
                return code;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.drain_output();
                panic!("init still running after {limit:?}; output:\n{}", self.seen.join("\n"));
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for the init to be gone, however it ended (a test that killed it).
    pub fn wait_gone(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().expect("waitable").is_none() {
            assert!(Instant::now() < deadline, "the init did not go away");
            thread::sleep(Duration::from_millis(2));
        }
        self.exit_code = Some(-1);
    }

    /// Everything the init and its children printed so far.
    pub fn output(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// After exit, collects the last lines (the reader threads end at EOF).
    fn drain_output(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(line);
        }
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        if self.exit_code.is_none() {
            // `--kill-child` makes unshare take the namespace down with it.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One process as seen in /proc/PID/stat.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
}

/// Every process visible on the host, by pid.
pub fn processes() -> HashMap<i32, ProcessInfo> {
    let mut found = HashMap::new();
    for entry in fs::read_dir("/proc").expect("/proc is mounted").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        found.insert(pid, ProcessInfo { pid, state, ppid });
    }
    found
}

/// Fields of /proc/PID/stat after the command name (field 3, the state, is index 0).
fn stat_fields(pid: i32) -> Vec<String> {
    let stat =
        fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| panic!("process {pid}: {e}"));
    let after_name = stat.rfind(')').map_or("", |close| &stat[close + 1..]);
    after_name.split_whitespace().map(str::to_string).collect()
}

/// CPU time a process has used, user and system, in clock ticks (1/100 s on Linux).
pub fn cpu_ticks(pid: i32) -> u64 {
    let fields = stat_fields(pid);
    // utime and stime are fields 14 and 15 of /proc/PID/stat.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(14) + field(15)
}

/// A process's resident memory (VmRSS) in kB.
pub fn rss_kb(pid: i32) -> u64 {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_else(|e| panic!("process {pid}: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for process {pid}"))
}

/// A process's open file descriptors, by number, with what each refers to.
pub fn open_fds(pid: i32) -> Vec<(i32, String)> {
    let dir = format!("/proc/{pid}/fd");
    let mut fds: Vec<(i32, String)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(entry.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect();
    fds.sort();
    fds
}

/// Zombies whose parent is `parent`.
pub fn zombie_children(parent: i32) -> Vec<i32> {
    processes().values().filter(|p| p.ppid == parent && p.state == 'Z').map(|p| p.pid).collect()
}

/// Whether a process with this pid exists on the host (zombies count as gone).
pub fn alive(pid: i32) -> bool {
    processes().get(&pid).is_some_and(|p| p.state != 'Z')
}

/// A command running `program` in a mount namespace of its own with a private /dev (holding
/// only null, zero and urandom). NVIDIA's libnvidia-ml, run as root, creates /dev/nvidiactl
/// when it is missing: anything that loads it in a test runs this way, so the machine's /dev
/// is never changed (and never made to look as if it had a GPU).
pub fn in_private_dev(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("unshare");
    command.args(["--mount", "sh", "-c"]).arg(format!("{PRIVATE_DEV} && exec \"$@\"")).arg("sh").arg(program);
    command
}

/// Shell commands that put a fresh /dev with the basic nodes in place (in a mount namespace).
pub const PRIVATE_DEV: &str = "mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && \
     mknod -m 666 /dev/zero c 1 5 && mknod -m 666 /dev/urandom c 1 9";

/// Shell steps that give a namespace private /usr/local (with the NVIDIA container toolkit's
/// empty /usr/local/nvidia/lib64 and bin, where the tests inject the driver) and an overlay
/// over /etc (for ld.so.cache and ld.so.conf.d), for tests of the `gpu` node. Use them with
/// [`PRIVATE_DEV`]: NVIDIA's libraries create /dev/nvidiactl.
pub const PRIVATE_GPU_SYSTEM: [&str; 3] = [
    "mount -t tmpfs tmpfs /usr/local && mkdir -p /usr/local/nvidia/lib64 /usr/local/nvidia/bin",
    "mkdir -p /run/etc-upper /run/etc-work",
    "mount -t overlay overlay -o lowerdir=/etc,upperdir=/run/etc-upper,workdir=/run/etc-work /etc",
];

/// The path of a fixture file.
pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(name);
    path.canonicalize().unwrap_or(path).to_string_lossy().into_owned()
}

/// NVIDIA's userspace from Debian's packages, unpacked by `cargo xtask fetch-nvidia` (which
/// `cargo xtask test` runs first): the directory that holds the unpacked tree.
pub fn nvidia_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/nvidia/root");
    assert!(root.is_dir(), "{} is missing: run `cargo xtask fetch-nvidia`", root.display());
    root
}

/// Writes `yaml` to a fresh temporary config file and returns its path; the file is removed
/// when the returned guard is dropped.
pub fn config_file(yaml: &str) -> TempConfig {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "nix2gpu-test-{}-{}.yaml",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::write(&path, yaml).expect("temp dir is writable");
    TempConfig(path)
}

/// A config file that is deleted when dropped.
pub struct TempConfig(pub PathBuf);

impl TempConfig {
    pub fn path(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The text of a `NAME | text` line of service `name` (names are padded to a common width).
pub fn split_service_line(line: &str, name: &str) -> Option<String> {
    let (prefix, text) = line.split_once(" | ")?;
    (prefix.trim_end() == name).then(|| text.to_string())
}

fn is_service_line(line: &str, name: &str, text: &str) -> bool {
    split_service_line(line, name).is_some_and(|t| t.contains(text))
}

/// The index of the first line containing `needle`, failing the test with the output if none.
pub fn position(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line containing {needle:?} in:\n{}", lines.join("\n")))
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind")
}

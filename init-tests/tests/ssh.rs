//! The built-in `sshd` node with Debian's real OpenSSH server, the init as PID 1 of fresh PID,
//! mount and network namespaces: /etc is a private copy (sshd reads /etc/passwd; the node
//! rewrites /etc/shadow), /etc/ssh and /root are empty tmpfs, and sshd listens on port 22 of
//! the namespace's own loopback. A russh client logs in from the test, with keys made by
//! ssh-keygen and passwords, and runs commands.

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use init_tests::{Init, Launch, PATIENCE, TempConfig, alive, config_file};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};

/// sshd's port inside the init's network namespace.
const PORT: u16 = 22;

/// A directory of the test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nix2gpu-ssh-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client key pair made by ssh-keygen.
struct Keypair {
    private: PathBuf,
    /// The authorized_keys line: `ssh-ed25519 AAAA... comment`.
    public: String,
}

impl Keypair {
    fn new(scratch: &Scratch, name: &str) -> Self {
        let private = scratch.path(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-t", "ed25519", "-C", name, "-f"])
            .arg(&private)
            .status()
            .expect("ssh-keygen (Debian's openssh-client) runs");
        assert!(status.success());
        let public = std::fs::read_to_string(private.with_extension("pub")).unwrap().trim().to_string();
        Self { private, public }
    }

    /// The public key without its comment.
    fn bare(&self) -> &str {
        self.public.rsplit_once(' ').unwrap().0
    }
}

/// How the client authenticates as root.
enum Credential<'a> {
    Key(&'a Keypair),
    Password(&'a str),
}

/// What a login attempt saw.
struct Attempt {
    /// The SHA-256 fingerprint of the host key the server showed.
    host_key: String,
    /// The command's exit status and output; `None` when authentication was refused.
    ran: Option<(u32, String)>,
}

/// Remembers the server's host key and accepts it (the test checks it itself).
struct Recorder(Arc<Mutex<String>>);

impl client::Handler for Recorder {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        if let PublicKeyOrCertificate::PublicKey { key, .. } = key {
            *self.0.lock().unwrap() = key.fingerprint(HashAlg::Sha256).to_string();
        }
        Ok(true)
    }
}

/// Runs `future` on a fresh single-threaded runtime, failing the test after [`PATIENCE`].
fn block_on<F: Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        tokio::time::timeout(PATIENCE, future).await.expect("the SSH exchange took too long")
    })
}

/// Logs in to the init's sshd as root and runs `command`.
fn ssh(init: &Init, credential: Credential<'_>, command: &str) -> Attempt {
    let stream = init.connect(PORT).expect("sshd accepts connections");
    stream.set_nonblocking(true).unwrap();
    let host_key = Arc::new(Mutex::new(String::new()));
    let ran = block_on(async {
        let stream = tokio::net::TcpStream::from_std(stream).unwrap();
        let config = Arc::new(client::Config::default());
        let mut handle = client::connect_stream(config, stream, Recorder(host_key.clone()))
            .await
            .expect("the SSH handshake succeeds");
        let accepted = match credential {
            Credential::Key(keypair) => {
                let key = russh::keys::load_secret_key(&keypair.private, None).unwrap();
                handle.authenticate_publickey("root", PrivateKeyWithHashAlg::new(Arc::new(key), None)).await
            }
            Credential::Password(password) => handle.authenticate_password("root", password).await,
        };
        if !accepted.expect("the server answers authentication").success() {
            return None;
        }
        Some(run(&mut handle, command).await)
    });
    let host_key = host_key.lock().unwrap().clone();
    Attempt { host_key, ran }
}

async fn run(handle: &mut Handle<Recorder>, command: &str) -> (u32, String) {
    let mut channel = handle.channel_open_session().await.expect("a session channel opens");
    channel.exec(true, command).await.expect("exec is sent");
    let (mut output, mut status) = (Vec::new(), None);
    while let Some(message) = channel.wait().await {
        match message {
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                output.extend_from_slice(&data)
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            _ => {}
        }
    }
    (status.expect("sshd reports the exit status"), String::from_utf8_lossy(&output).into_owned())
}

/// A login that must succeed; returns the command's exit status and output.
fn must_log_in(init: &Init, credential: Credential<'_>, command: &str) -> (u32, String) {
    ssh(init, credential, command).ran.expect("the login is accepted")
}

fn is_refused(init: &Init, credential: Credential<'_>) -> bool {
    ssh(init, credential, "true").ran.is_none()
}

/// A config that runs the sshd node with these `nix2gpu.ssh` settings (a YAML flow mapping's
/// inside).
fn ssh_config(settings: &str) -> TempConfig {
    config_file(&format!("nix2gpu:\n  gpu: {{enable: false}}\n  ssh: {{port: {PORT}, {settings}}}\n"))
}

/// The init with the sshd node, in namespaces that keep the machine's /etc, /etc/ssh, /root
/// and network untouched.
fn launch(config: &TempConfig) -> Launch {
    Launch::new(&["--config", config.path()])
        .private_network()
        .private_copy("/etc")
        .private_dir("/etc/ssh")
        .private_dir("/root")
}

/// Waits until the sshd node is ready (its port accepts) with `restarts` restarts.
fn wait_ready(init: &Init, restarts: u64) -> serde_json::Value {
    init.wait_for_node("sshd", "ready", |node| node["ready"] == true && node["restarts"] == restarts)
}

/// Runs `argv` inside the init's mount namespace; returns its stdout.
fn inside(init: &Init, argv: &[&str]) -> String {
    let output = Command::new("nsenter")
        .args(["--target", &init.host_pid().to_string(), "--mount", "--"])
        .args(argv)
        .output()
        .expect("nsenter runs");
    assert!(output.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The machine's /etc/shadow with root's entry replaced by `root_entry`.
fn shadow_with_root(root_entry: &str) -> String {
    let shadow = std::fs::read_to_string("/etc/shadow").expect("the tests run as root");
    let others: String =
        shadow.lines().filter(|l| !l.starts_with("root:")).map(|l| format!("{l}\n")).collect();
    format!("{root_entry}\n{others}")
}

#[test]
fn keys_from_each_variable_log_in_and_run_a_command() {
    let scratch = Scratch::new("vars");
    let keys: Vec<Keypair> = (0..4).map(|n| Keypair::new(&scratch, &format!("key{n}"))).collect();
    let config = ssh_config("enable: auto");
    let mut init = launch(&config)
        // One variable may hold several keys, one a line.
        .env("SSH_PUBLIC_KEYS", &format!("{}\n{}\n", keys[0].public, keys[3].public))
        .env("PUBLIC_KEY", &keys[1].public)
        .env("SSH_PUBLIC_KEY", &keys[2].public)
        .start();
    wait_ready(&init, 0);
    for (n, key) in keys.iter().enumerate() {
        let (status, output) = must_log_in(&init, Credential::Key(key), &format!("id -un; exit {}", 10 + n));
        assert_eq!((status, output.as_str()), (10 + n as u32, "root\n"), "key{n}");
    }
    init.wait_for_service_line("sshd", "Accepted publickey for root");
    init.wait_for_service_line("sshd", "4 authorized key(s) in /root/.ssh/authorized_keys");
    let modes = inside(&init, &["stat", "-c", "%a %U %n", "/root/.ssh", "/root/.ssh/authorized_keys"]);
    assert_eq!(modes, "700 root /root/.ssh\n600 root /root/.ssh/authorized_keys\n");
}

#[test]
fn an_unknown_key_and_a_password_are_refused_by_default() {
    let scratch = Scratch::new("refused");
    let (known, stranger) = (Keypair::new(&scratch, "known"), Keypair::new(&scratch, "stranger"));
    let config = ssh_config("enable: auto");
    // Root has a password in /etc/shadow (hash of "opensesame"), but none was given to the
    // init: password logins stay off.
    let hash = "$6$8hCEr1nH2GZ4BGnu$WW9E44e/7b4DWFofE7E0/O4PwjcIg4hPbQVe7zihwLi5IdgPa3yjDImwb3moSio3yNowvZaKI515C6Vf4eNxO1";
    let init = launch(&config)
        .file("/etc/shadow", &shadow_with_root(&format!("root:{hash}:19000:0:99999:7:::")))
        .env("SSH_PUBLIC_KEYS", &known.public)
        .start();
    wait_ready(&init, 0);
    assert!(is_refused(&init, Credential::Key(&stranger)));
    assert!(is_refused(&init, Credential::Password("opensesame")));
    assert!(is_refused(&init, Credential::Password("")));
    assert_eq!(must_log_in(&init, Credential::Key(&known), "echo in").1, "in\n");
    assert!(inside(&init, &["cat", "/etc/shadow"]).contains(hash), "a password that was set stays");
}

#[test]
fn root_password_logs_in_and_stays_out_of_sshd_s_environment() {
    // sshd overwrites its own environ in /proc with its process title, so a wrapper records
    // the environment the node hands over before it execs the real sshd.
    let scratch = Scratch::new("password");
    let wrapper = scratch.path("sshd");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\ntr '\\0' '\\n' < /proc/$$/environ > /run/sshd-environ\nexec /usr/sbin/sshd \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = ssh_config(&format!("enable: auto, sshd: {}", wrapper.display()));
    let password = "correct horse battery staple";
    let init = launch(&config).env("ROOT_PASSWORD", password).env("UNRELATED_MARKER", "1").start();
    let node = wait_ready(&init, 0);
    assert_eq!(must_log_in(&init, Credential::Password(password), "id -un; exit 4"), (4, "root\n".into()));
    assert!(is_refused(&init, Credential::Password("wrong password")));
    let shadow = inside(&init, &["cat", "/etc/shadow"]);
    let root = shadow.lines().find(|l| l.starts_with("root:")).unwrap();
    assert!(root.starts_with("root:$6$"), "a SHA-512 crypt hash: {root}");
    assert!(!shadow.contains(password));
    let environ = inside(&init, &["cat", "/run/sshd-environ"]);
    let names: Vec<&str> =
        environ.lines().filter_map(|line| line.split_once('=').map(|(name, _)| name)).collect();
    assert_eq!(names, ["PATH"], "sshd gets PATH (and TZ when set), nothing else: {environ}");
    let sshd = init.host_pid_of(node["pid"].as_i64().unwrap());
    let cmdline = std::fs::read(format!("/proc/{sshd}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(password));
    let program = std::fs::read_link(format!("/proc/{sshd}/exe")).unwrap();
    assert_eq!(program, PathBuf::from("/usr/sbin/sshd"), "the node's process is sshd itself");
}

#[test]
fn a_keys_file_with_option_lines_keeps_the_good_keys_and_names_the_bad_line() {
    let scratch = Scratch::new("file");
    let keys: Vec<Keypair> = (0..3).map(|n| Keypair::new(&scratch, &format!("key{n}"))).collect();
    let file = scratch.path("authorized_keys");
    let garbage = "this line is no key at all";
    std::fs::write(
        &file,
        format!(
            "# the team's keys\nrestrict,command=\"echo forced, \\\"quoted\\\"; exit 5\" {}\nfrom=\"127.0.0.1\",no-pty {}\n{garbage}\nfrom=\"10.9.9.9\" {}\n",
            keys[0].public,
            keys[1].bare(),
            keys[2].public
        ),
    )
    .unwrap();
    let config = ssh_config(&format!("enable: auto, authorized_keys_file: {}", file.display()));
    let mut init = launch(&config).start();
    wait_ready(&init, 0);
    // sshd honours each option: the forced command (its `\"` unescaped, then the quotes
    // removed by the shell), the source address.
    assert_eq!(must_log_in(&init, Credential::Key(&keys[0]), "echo asked"), (5, "forced, quoted\n".into()));
    assert_eq!(must_log_in(&init, Credential::Key(&keys[1]), "echo asked"), (0, "asked\n".into()));
    assert!(is_refused(&init, Credential::Key(&keys[2])), "from=10.9.9.9 does not match 127.0.0.1");
    let warning = init.wait_for_service_line("sshd", &format!("warning: {} line 4: skipped", file.display()));
    assert!(!warning.contains(garbage), "{warning}");
    init.wait_for_service_line("sshd", "3 authorized key(s)");
}

#[test]
fn a_killed_sshd_comes_back_and_takes_logins_again() {
    let scratch = Scratch::new("kill");
    let key = Keypair::new(&scratch, "key");
    let config = ssh_config("enable: auto");
    let init = launch(&config).env("SSH_PUBLIC_KEYS", &key.public).start();
    let node = wait_ready(&init, 0);
    assert_eq!(must_log_in(&init, Credential::Key(&key), "echo first").1, "first\n");
    let sshd = init.host_pid_of(node["pid"].as_i64().unwrap());
    kill(Pid::from_raw(sshd), Signal::SIGKILL).unwrap();
    let node = wait_ready(&init, 1);
    assert!(!alive(sshd));
    assert_ne!(init.host_pid_of(node["pid"].as_i64().unwrap()), sshd);
    assert_eq!(must_log_in(&init, Credential::Key(&key), "echo again").1, "again\n");
}

#[test]
fn host_keys_survive_a_restart_of_the_init() {
    let scratch = Scratch::new("hostkeys");
    let key = Keypair::new(&scratch, "key");
    let host_keys = scratch.path("host-keys");
    let config = ssh_config(&format!("enable: auto, host_key_dir: {}", host_keys.display()));
    let boot = || {
        let mut init = launch(&config).env("SSH_PUBLIC_KEYS", &key.public).start();
        wait_ready(&init, 0);
        let attempt = ssh(&init, Credential::Key(&key), "true");
        assert!(attempt.ran.is_some());
        init.signal(Signal::SIGTERM);
        assert_eq!(init.wait_exit(), 0);
        attempt.host_key
    };
    let first = boot();
    let files = |name: &str| std::fs::read(host_keys.join(name)).unwrap();
    let (ed25519, rsa) = (files("ssh_host_ed25519_key"), files("ssh_host_rsa_key"));
    let second = boot();
    assert_eq!(first, second, "the same host key on both boots");
    assert_eq!((files("ssh_host_ed25519_key"), files("ssh_host_rsa_key")), (ed25519, rsa));
    // And it is the key in the directory.
    let listed = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(host_keys.join("ssh_host_ed25519_key.pub"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&first), "{first}");
}

#[test]
fn allow_empty_password_logs_in_without_one_and_warns() {
    let config = ssh_config("enable: auto, allow_empty_password: true");
    let mut init = launch(&config).start();
    wait_ready(&init, 0);
    assert_eq!(must_log_in(&init, Credential::Password(""), "id -un"), (0, "root\n".into()));
    init.wait_for_service_line("sshd", "warning: root can log in over SSH without a password");
}

/// nix2gpu's images ship root locked (`!` in /etc/shadow), which OpenSSH without PAM takes as
/// "refuse every login", keys too.
#[test]
fn a_locked_root_account_still_logs_in_with_a_key() {
    let scratch = Scratch::new("locked");
    let key = Keypair::new(&scratch, "key");
    let config = ssh_config("enable: auto");
    let init = launch(&config)
        .file("/etc/shadow", &shadow_with_root("root:!:19000:0:99999:7:::"))
        .env("SSH_PUBLIC_KEYS", &key.public)
        .start();
    wait_ready(&init, 0);
    assert_eq!(must_log_in(&init, Credential::Key(&key), "echo in").1, "in\n");
    let shadow = inside(&init, &["cat", "/etc/shadow"]);
    assert!(shadow.starts_with("root:*:19000:"), "unlocked, no password: {}", shadow.lines().next().unwrap());
    assert!(is_refused(&init, Credential::Password("")));
}

#[test]
fn a_missing_sshd_is_a_clear_error() {
    let config = ssh_config("enable: true, sshd: no-such-sshd");
    let mut init = launch(&config).start();
    init.wait_for_service_line("sshd", "the OpenSSH server `no-such-sshd` was not found");
    init.wait_for_node("sshd", "failed with 127", |node| node["exit_code"] == 127);
}

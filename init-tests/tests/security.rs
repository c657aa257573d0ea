//! The claims of SECURITY.md that no other test file checks: what a process the init starts
//! inherits (descriptors, identity, capabilities), what a service running as another user can
//! reach of the init's, the control socket's mode whatever the umask, and the HTTP endpoint:
//! off unless configured, and read-only when on.

use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use init_tests::{Init, Launch, PATIENCE, config_file, fixture, open_fds};
use nix::sys::signal::Signal;

/// The host pid of node `name`'s process.
fn host_pid(init: &Init, name: &str) -> i32 {
    init.host_pid_of(init.node(name)["pid"].as_i64().unwrap_or_else(|| panic!("{name} is not running")))
}

/// A field of /proc/PID/status, e.g. `Groups`.
fn status_field(pid: i32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let prefix = format!("{field}:");
    status.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().to_string()).unwrap_or_default()
}

/// The descriptor numbers a process has open.
fn fd_numbers(pid: i32) -> Vec<i32> {
    open_fds(pid).into_iter().map(|(fd, _)| fd).collect()
}

/// A path inside the init's mount namespace, from the host.
fn inside(init: &Init, path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{}/root{path}", init.host_pid()))
}

/// Waits until `path` exists and returns its content.
fn wait_for_file(path: &PathBuf) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(text) = fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn http_get(init: &Init, port: u16, request: &str) -> String {
    let mut stream = init.connect(port).expect("the endpoint listens");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn what_the_init_starts_gets_descriptors_0_1_and_2_only() {
    let notify = fixture("notify.py");
    let config = config_file(&format!(
        r#"
nix2gpu:
  health: {{listen: "127.0.0.1:9000"}}
processes:
  root_service:
    command: exec sleep 1000
  user_service:
    command: exec sleep 1000
    user: "65534:65534"
  notifier:
    entrypoint: [python3, {notify}, send=READY=1, pause]
    notify: true
  probed:
    command: exec sleep 1000
    readiness_probe: {{exec: {{command: "exec ls /proc/self/fd > /run/probe-fds"}}, period_seconds: 0.2}}
"#
    ));
    // The init inherits descriptor 9 (open on a file, not close-on-exec), as from a runtime's
    // --preserve-fds: the main process gets it, nothing else does.
    let mut init = Launch::new(&["--config", config.path(), "--", "sleep", "1000"])
        .setup("exec 9</etc/hostname")
        .private_network()
        .start();
    init.wait_for_node("notifier", "ready", |n| n["ready"] == true);
    init.wait_for_node("probed", "ready", |n| n["ready"] == true);
    // The init's own: the control socket, the notify socket, the HTTP listener, the signalfd,
    // the event loop's, the output pipes of four services, and what it inherited.
    let mine = open_fds(init.host_pid());
    assert!(mine.len() >= 14, "the init holds its sockets and pipes: {mine:?}");
    assert!(mine.iter().any(|(fd, target)| *fd == 9 && target == "/etc/hostname"), "{mine:?}");
    // (notify.py opens a socket of its own to send READY=1: it is left out.)
    for name in ["root_service", "user_service", "probed"] {
        let pid = host_pid(&init, name);
        assert_eq!(fd_numbers(pid), [0, 1, 2], "{name}: {:?}", open_fds(pid));
    }
    // An exec probe: ls lists its own descriptors, 3 being the directory it reads.
    let probe = wait_for_file(&inside(&init, "/run/probe-fds"));
    assert_eq!(probe.split_whitespace().collect::<Vec<_>>(), ["0", "1", "2", "3"], "an exec probe");
    let main = host_pid(&init, "main");
    assert!(open_fds(main).contains(&(9, "/etc/hostname".to_string())), "main: {:?}", open_fds(main));

    // Started while a `logs -f` client and an HTTP client are connected.
    let mut follower = std::os::unix::net::UnixStream::connect(init.socket()).unwrap();
    follower.write_all(b"{\"v\":1,\"cmd\":\"logs\",\"name\":null,\"lines\":0,\"follow\":true}\n").unwrap();
    let mut http = init.connect(9000).unwrap();
    http.write_all(b"GET /status HTTP/1.1\r\n").unwrap();
    let old = host_pid(&init, "root_service");
    let (code, _, stderr) = init.client(&["restart", "root_service"]);
    assert_eq!(code, 0, "{stderr}");
    init.wait_for_node("root_service", "running again", |n| {
        n["state"] == "running" && n["pid"].as_i64().is_some_and(|p| init.host_pid_of(p) != old)
    });
    let pid = host_pid(&init, "root_service");
    assert_eq!(fd_numbers(pid), [0, 1, 2], "restarted: {:?}", open_fds(pid));
    drop((follower, http));
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 143, "main's code: killed by SIGTERM");
}

#[test]
fn user_services_lose_the_init_s_groups_and_every_capability() {
    let config = config_file(
        "processes:
  named:
    command: exec sleep 1000
    user: svc
  numeric:
    command: exec sleep 1000
    user: \"65534:65534\"
  privileged:
    command: exec sleep 1000
",
    );
    // The init runs with supplementary groups of its own (disk, audio, users), which a
    // service of another user must not keep; `svc` is in `video` besides its own group.
    let mut init = Launch::new(&["--config", config.path()])
        .private_copy("/etc")
        .setup("echo 'svc:x:4242:4242::/nonexistent:/bin/sh' >> /etc/passwd")
        .setup("echo 'svc:x:4242:' >> /etc/group && echo 'videoish:x:4343:svc' >> /etc/group")
        .wrapped(&["setpriv", "--groups=6,29,100", "--"])
        .start();
    for name in ["named", "numeric", "privileged"] {
        init.wait_for_node(name, "running", |n| n["state"] == "running");
    }
    assert_eq!(status_field(init.host_pid(), "Groups"), "6 29 100", "the test's premise");
    let named = host_pid(&init, "named");
    assert_eq!(status_field(named, "Uid"), "4242\t4242\t4242\t4242", "real, effective, saved, fs");
    assert_eq!(status_field(named, "Gid"), "4242\t4242\t4242\t4242");
    assert_eq!(status_field(named, "Groups"), "4242 4343");
    let numeric = host_pid(&init, "numeric");
    assert_eq!(status_field(numeric, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(numeric, "Groups"), "65534");
    for pid in [named, numeric] {
        for caps in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(status_field(pid, caps), "0000000000000000", "{caps} of {pid}");
        }
    }
    // A service without `user` runs as the init does.
    let privileged = host_pid(&init, "privileged");
    assert_eq!(status_field(privileged, "Uid"), "0\t0\t0\t0");
    assert_eq!(status_field(privileged, "Groups"), "6 29 100");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn a_service_of_another_user_reaches_nothing_of_the_init_s() {
    // Each attempt's error goes to the service's output; the client binary is copied where
    // user 65534 may run it.
    let config = config_file(
        r#"
nix2gpu: {ssh: {enable: false}}
processes:
  intruder:
    command: >-
      for f in /proc/1/environ /run/nix2gpu/secrets/root_password; do cat $$f 2>&1 >/dev/null; done;
      ls /run/nix2gpu 2>&1 >/dev/null;
      /run/client status 2>&1 >/dev/null;
      kill -TERM 1 2>&1;
      echo done; exec sleep 1000
    user: "65534:65534"
  root_service:
    command: kill -KILL 1; echo kill-sent; exec sleep 1000
"#,
    );
    let mut init = Launch::new(&["--config", config.path()])
        .socket("")
        .setup(&format!("cp {} /run/client", init_tests::init_binary().display()))
        .env("ROOT_PASSWORD", "do-not-read-me")
        .start();
    init.wait_for_service_line("intruder", "done");
    let secret = fs::read_to_string(inside(&init, "/run/nix2gpu/secrets/root_password")).unwrap();
    assert_eq!(secret, "do-not-read-me", "the secret is there, for root");
    let lines = init.service_lines("intruder");
    // (Fragments: the quotes around a name depend on the locale.)
    for refusal in [
        ["cat: /proc/1/environ: Permission denied", ""],
        ["cat: /run/nix2gpu/secrets/root_password: Permission denied", ""],
        ["ls: cannot open directory", "/run/nix2gpu"],
        ["permission denied on /run/nix2gpu/control.sock: the control socket is for root only", ""],
        ["kill: Operation not permitted", ""],
    ] {
        let found = lines.iter().any(|l| refusal.iter().all(|part| l.contains(part)));
        assert!(found, "{refusal:?} in {lines:#?}");
    }
    // Even root in the init's PID namespace cannot SIGKILL it: the kernel protects PID 1.
    init.wait_for_service_line("root_service", "kill-sent");
    let output = std::process::Command::new("nsenter")
        .args(["--target", &init.host_pid().to_string(), "--mount", "--pid", "--", "/run/client", "status"])
        .env_remove("NIX2GPU_CONTROL_SOCKET")
        .output()
        .unwrap();
    assert!(output.status.success(), "root still gets an answer: {output:?}");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn the_control_socket_is_root_only_whatever_the_umask() {
    let config = config_file("processes:\n  idle: {command: echo up; exec sleep 1000}\n");
    // A runtime that starts the init with umask 0 would make files world-writable by default.
    let mut init = Launch::new(&["--config", config.path()]).socket("").setup("umask 0").start();
    init.wait_for_service_line("idle", "up");
    let modes = |init: &Init| {
        let output = std::process::Command::new("nsenter")
            .args(["--target", &init.host_pid().to_string(), "--mount", "stat", "-c", "%a %U"])
            .args(["/run/nix2gpu", "/run/nix2gpu/control.sock"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(modes(&init), "700 root\n600 root\n");
    // Bound again after a deletion, while services run: the same.
    fs::remove_file(inside(&init, "/run/nix2gpu/control.sock")).unwrap();
    init.wait_for_line("control socket /run/nix2gpu/control.sock bound again");
    assert_eq!(modes(&init), "700 root\n600 root\n");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn the_http_endpoint_is_off_unless_configured() {
    let config = config_file("processes:\n  idle: {command: exec sleep 1000}\n");
    let mut init = Launch::new(&["--config", config.path()]).private_network().start();
    init.wait_for_node("idle", "running", |n| n["state"] == "running");
    // Nothing listens in the init's network namespace (state 0A: LISTEN).
    for table in ["tcp", "tcp6"] {
        let text = fs::read_to_string(format!("/proc/{}/net/{table}", init.host_pid())).unwrap();
        let listening: Vec<&str> =
            text.lines().skip(1).filter(|l| l.split_whitespace().nth(3) == Some("0A")).collect();
        assert!(listening.is_empty(), "{table}: {listening:?}");
    }
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn the_http_endpoint_answers_four_read_only_paths_and_nothing_else() {
    let config = config_file(
        "nix2gpu:\n  health: {listen: \"127.0.0.1:9000\"}\nprocesses:\n  idle: {command: exec sleep 1000}\n",
    );
    let mut init = Launch::new(&["--config", config.path()]).private_network().start();
    init.wait_for_node("idle", "running", |n| n["state"] == "running");
    let status_line = |request: &str| http_get(&init, 9000, request).lines().next().unwrap_or("").to_string();
    for path in ["/healthz", "/readyz", "/status", "/metrics"] {
        assert_eq!(status_line(&format!("GET {path} HTTP/1.0\r\n\r\n")), "HTTP/1.0 200 OK", "{path}");
    }
    for path in ["/", "/status/", "/../etc/passwd", "/proc/1/environ", "/metrics/x"] {
        assert!(status_line(&format!("GET {path} HTTP/1.0\r\n\r\n")).contains(" 404 "), "{path}");
    }
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let request = format!("{method} /status HTTP/1.0\r\nContent-Length: 2\r\n\r\n{{}}");
        assert!(status_line(&request).contains(" 405 "), "{method}");
    }
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

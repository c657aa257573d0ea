//! Fault injection: the init as PID 1 under the abuse a container meets in production, each
//! outcome asserted and every wait bounded. An orphan storm, a signal storm, a crash loop, a
//! stdout that stalls or goes away, services killed from outside, the control socket deleted,
//! a read-only /run, a process table of descriptors used up, and garbage where the NVIDIA
//! driver's libraries should be. (An injection that never comes is `gpu_node.rs`'s
//! `nothing_injected_gives_a_verdict_at_the_deadline_and_skips_dependents`.)

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use init_tests::{
    Init, Launch, PATIENCE, config_file, cpu_ticks, eventually, open_fds, rss_kb, zombie_children,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Clock ticks per second in /proc/PID/stat (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Compiles `fixtures/NAME.c` into Cargo's scratch directory for tests; returns the program.
fn compile_fixture(name: &str) -> String {
    let output = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let status = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&output)
        .arg(init_tests::fixture(&format!("{name}.c")))
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc {name}.c failed");
    output.display().to_string()
}

/// The node `name`'s pid in the init's namespace and its restart count.
fn pid_and_restarts(init: &Init, name: &str) -> (i64, u64) {
    let node = init.node(name);
    (node["pid"].as_i64().unwrap_or(-1), node["restarts"].as_u64().unwrap_or(u64::MAX))
}

/// Sends an HTTP GET to `port` inside the init's network namespace; returns the status line.
fn http_status_line(init: &Init, port: u16) -> String {
    use std::io::Write;
    let mut stream = init.connect(port).expect("the server accepts");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or("").to_string()
}

#[test]
fn an_orphan_storm_leaves_no_zombie_and_services_untouched() {
    const STORMS: usize = 4;
    const ORPHANS_EACH: usize = 2500;
    let storm = compile_fixture("orphan_storm");
    // Four storms at once, started when the web server is ready: 10,000 children that exit at
    // once and whose parents never wait, re-parented to PID 1 as their parents exit.
    let storms: String = (1..=STORMS)
        .map(|n| {
            format!(
                "  storm{n}:\n    entrypoint: [\"{storm}\", \"{ORPHANS_EACH}\"]\n    depends_on: {{web: {{condition: process_healthy}}}}\n"
            )
        })
        .collect();
    let config = config_file(&format!(
        "processes:
  web:
    entrypoint: [python3, -m, http.server, --bind, 127.0.0.1, \"8000\"]
    readiness_probe: {{tcp_socket: {{port: 8000}}, period_seconds: 0.2}}
  idle:
    command: exec sleep 1000
{storms}"
    ));
    let mut init = Launch::new(&["--config", config.path()]).private_network().start();
    init.wait_for_node("web", "ready", |n| n["ready"] == true);
    let host = init.host_pid();
    let before: Vec<(i64, u64)> = ["web", "idle"].iter().map(|name| pid_and_restarts(&init, name)).collect();
    let ticks_before = cpu_ticks(host);
    let started = Instant::now();
    for n in 1..=STORMS {
        let node = init.wait_for_node(&format!("storm{n}"), "completed", |n| n["state"] == "completed");
        assert_eq!(node["exit_code"], 0, "every fork succeeded: {node}");
    }
    // Every orphan reaped: nothing left in the namespace but the init, python and sleep.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let zombies = zombie_children(host);
        let left = init.namespace_pids().len();
        if zombies.is_empty() && left == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{} zombies and {left} processes left", zombies.len());
        thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let cpu = (cpu_ticks(host) - ticks_before) as f64 / TICKS_PER_SECOND;
    eprintln!("{} orphans reaped in {took:?}, {cpu:.2} s of the init's CPU", STORMS * ORPHANS_EACH);

    let after: Vec<(i64, u64)> = ["web", "idle"].iter().map(|name| pid_and_restarts(&init, name)).collect();
    assert_eq!(before, after, "same pids, no restarts");
    assert_eq!(init.node("web")["state"], "ready");
    assert_eq!(http_status_line(&init, 8000), "HTTP/1.0 200 OK");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

/// What the signal storm sends: real-time signals (queued by the kernel, so each must arrive
/// exactly once) and, every tenth, a standard one (which the kernel coalesces while pending).
const REALTIME: [i32; 4] = [34, 35, 36, 37];
const STANDARD: [Signal; 8] = [
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGALRM,
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGCHLD,
];

/// The last `got NAME #N.` count the counter printed for `name` (0 if none).
fn last_count(init: &mut Init, name: &str) -> u64 {
    let prefix = format!("got {name} #");
    init.output()
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix(&prefix)?.strip_suffix('.')?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_thousand_signals_a_second_for_ten_seconds_are_all_forwarded() {
    const RATE: u32 = 1000;
    const SECONDS: u32 = 10;
    let total = RATE * SECONDS;
    let realtime_total = total - total / 10;
    let counter = env!("CARGO_BIN_EXE_signal-counter");
    let mut init = Launch::new(&["--", counter, &realtime_total.to_string()]).start();
    init.wait_for_line("ready");
    let host = init.host_pid();
    let ticks_before = cpu_ticks(host);
    let mut sent: BTreeMap<i32, u64> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..total {
        // Paced against the clock: signal i goes out at i ms.
        let due = started + Duration::from_micros(u64::from(i) * 1_000_000 / u64::from(RATE));
        thread::sleep(due.saturating_duration_since(Instant::now()));
        let signo = if i % 10 == 9 {
            STANDARD[(i as usize / 10) % STANDARD.len()] as i32
        } else {
            REALTIME[i as usize % REALTIME.len()]
        };
        // SAFETY: kill(2) with a live pid and a valid signal number.
        assert_eq!(unsafe { nix::libc::kill(host, signo) }, 0, "the init is alive at signal {i}");
        *sent.entry(signo).or_default() += 1;
    }
    let storm = started.elapsed();
    let rate = f64::from(total) / storm.as_secs_f64();
    assert!(rate > f64::from(RATE) * 0.9, "the storm ran at only {rate:.0}/s");
    init.wait_for_line(&format!("all {realtime_total} real-time signals"));
    let cpu = (cpu_ticks(host) - ticks_before) as f64 / TICKS_PER_SECOND;
    eprintln!("{total} signals in {storm:?} ({rate:.0}/s); the init used {cpu:.2} s of CPU");

    // Standard signals coalesce while pending, but the last one sent is never lost: one more
    // of each, now, must arrive.
    for signal in STANDARD.iter().filter(|s| **s != Signal::SIGCHLD) {
        let name = &signal.as_str()[3..];
        let count = last_count(&mut init, name);
        assert!(count >= 1, "no {name} arrived during the storm");
        init.signal(*signal);
        init.wait_for_line(&format!("got {name} #{}.", count + 1));
    }
    init.signal(Signal::SIGTERM);
    let last = init.wait_for_line("final ");
    assert_eq!(init.wait_exit(), 0);
    let received: BTreeMap<i32, u64> = last["final ".len()..]
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(signo, count)| (signo.parse().unwrap(), count.parse().unwrap()))
        .collect();
    for signo in REALTIME {
        assert_eq!(received.get(&signo), sent.get(&signo), "real-time signal {signo}: every one, once");
    }
    for signal in STANDARD {
        let (signo, sent) = (signal as i32, sent[&(signal as i32)]);
        let got = received.get(&signo).copied().unwrap_or(0);
        if signal == Signal::SIGCHLD {
            assert_eq!(got, 0, "SIGCHLD is never forwarded");
        } else {
            assert!((1..=sent + 1).contains(&got), "{signal}: {got} received of {sent} (+1) sent");
        }
    }
}

/// The most restarts a node failing at once can have decided within `elapsed`: restart k is
/// decided when run k-1 fails and waits `base * 2^(k-1)` (capped at 60 s), so the k-th is
/// decided only after the first k-1 delays have passed. The count includes the restart still
/// waiting out its delay (the node is in `backoff`), as `status` does.
fn restarts_allowed(base: Duration, elapsed: Duration) -> u64 {
    let (mut waited, mut restarts) = (Duration::ZERO, 0);
    loop {
        let delay = (base * 2u32.pow(restarts)).min(Duration::from_secs(60));
        if waited + delay > elapsed {
            return u64::from(restarts) + 1;
        }
        waited += delay;
        restarts += 1;
    }
}

#[test]
fn a_crash_loop_is_held_by_the_backoff_with_little_cpu_and_flat_memory() {
    const SERVICES: usize = 20;
    const WINDOW: Duration = Duration::from_secs(13);
    let base = Duration::from_millis(10);
    // Twenty services that fail the moment they start, restarted always, from a 10 ms backoff.
    let services: String = (0..SERVICES)
        .map(|n| {
            format!(
                "  crash{n}:\n    entrypoint: [/bin/false]\n    availability: {{restart: always, backoff_seconds: 0.01}}\n"
            )
        })
        .collect();
    let config = config_file(&format!("processes:\n{services}"));
    let mut init = Launch::new(&["--config", config.path()]).start();
    let started = Instant::now();
    let host = init.host_pid();
    init.wait_for_line("crash0: started");
    let mut samples = Vec::new();
    // RSS once a second after the first burst of restarts (the first 8 take 2.55 s).
    let mut next = started + Duration::from_secs(3);
    while next < started + WINDOW {
        thread::sleep(next.saturating_duration_since(Instant::now()));
        samples.push(rss_kb(host));
        next += Duration::from_secs(1);
    }
    let status = init.status();
    let elapsed = started.elapsed();
    let cpu = cpu_ticks(host) as f64 / TICKS_PER_SECOND;
    let (low, high) = (
        restarts_allowed(base, elapsed.saturating_sub(Duration::from_secs(1))),
        restarts_allowed(base, elapsed),
    );
    let nodes = status["nodes"].as_array().unwrap();
    assert!(nodes.iter().all(|n| n["state"] == "backoff"), "each waits out its next delay: {status}");
    let restarts: Vec<u64> = nodes.iter().map(|n| n["restarts"].as_u64().unwrap()).collect();
    eprintln!(
        "after {elapsed:?}: restarts {restarts:?} (the schedule allows {low}..={high}), init CPU {cpu:.2} s, RSS samples {samples:?} kB"
    );
    assert_eq!(restarts.len(), SERVICES);
    for count in &restarts {
        assert!((low..=high).contains(count), "{count} restarts, the backoff allows {low}..={high}");
    }
    assert!(cpu < 1.0, "the init used {cpu:.2} s of CPU in {elapsed:?}");
    let (min, max) = (samples.iter().min().unwrap(), samples.iter().max().unwrap());
    assert!(max - min <= 256, "RSS moved from {min} to {max} kB: {samples:?}");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

/// Waits until the process `host_pid` sleeps in a write(2) to its stdout: its pipe is full.
fn wait_blocked_writing(host_pid: i32) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        // The syscall number (1: write) and its first argument (the fd).
        let syscall = std::fs::read_to_string(format!("/proc/{host_pid}/syscall")).unwrap_or_default();
        if syscall.starts_with("1 0x1 ") {
            return;
        }
        assert!(Instant::now() < deadline, "process {host_pid} never blocked writing: {syscall}");
        thread::sleep(Duration::from_millis(10));
    }
}

const FLOOD_LINES: u32 = 300_000;

/// A service that writes 300,000 numbered lines (about 4 MB framed, far more than the 1 MiB
/// the init buffers and the pipes hold) and one that idles.
fn flood_config() -> init_tests::TempConfig {
    config_file(&format!(
        "processes:\n  flood:\n    entrypoint: [seq, \"1\", \"{FLOOD_LINES}\"]\n  idle:\n    command: exec sleep 1000\n"
    ))
}

#[test]
fn a_stalled_stdout_holds_services_back_without_loss_and_the_init_keeps_working() {
    let config = flood_config();
    let (mut init, stdout) = Launch::new(&["--config", config.path()]).start_holding_stdout();
    // Nobody reads the init's stdout: the flood fills it, the init's buffer, and its own pipe.
    let flood = init.wait_for_node("flood", "running", |n| n["state"] == "running");
    let flood_host = init.host_pid_of(flood["pid"].as_i64().unwrap());
    wait_blocked_writing(flood_host);
    let host = init.host_pid();
    let rss = rss_kb(host);
    // The loop does not wait for stdout: it answers, restarts, reaps.
    let (idle_pid, _) = pid_and_restarts(&init, "idle");
    let (code, _, stderr) = init.client(&["restart", "idle"]);
    assert_eq!(code, 0, "{stderr}");
    let idle =
        init.wait_for_node("idle", "running again", |n| n["state"] == "running" && n["pid"] != idle_pid);
    assert!(zombie_children(host).is_empty());
    assert_eq!(init.node("flood")["state"], "running", "held back, not failed");
    wait_blocked_writing(flood_host);
    eprintln!("stdout stalled: the init's RSS {rss} kB, {} kB after a restart", rss_kb(host));
    assert!(rss_kb(host) < 8 * 1024, "memory bounded while stdout is stalled");

    // The reader resumes: everything arrives, in order, and the flood finishes.
    let reader = read_all_in_thread(stdout);
    init.wait_for_node("flood", "completed", |n| n["state"] == "completed");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
    let text = reader.join().unwrap();
    let numbers: Vec<u32> = text
        .lines()
        .filter_map(|line| init_tests::split_service_line(line, "flood"))
        .map(|n| n.parse().unwrap_or_else(|_| panic!("a torn line: {n:?}")))
        .collect();
    assert_eq!(numbers.len(), FLOOD_LINES as usize, "no line lost");
    assert!(numbers.iter().copied().eq(1..=FLOOD_LINES), "in order");
    let restarted = format!("idle: started (pid {})", idle["pid"]);
    assert!(text.contains(&restarted), "the init's own lines written after the stall: no {restarted:?}");
}

#[test]
fn a_stalled_stdout_still_lets_another_services_ready_line_through() {
    // `db` prints its ready line on SIGUSR1, sent once the flood has stalled stdout; `app` waits
    // for that line. The output has no room for db's line then, yet the line is seen.
    let config = config_file(&format!(
        "processes:
  flood:
    entrypoint: [seq, \"1\", \"{FLOOD_LINES}\"]
  db:
    command: trap 'echo db is ready; exec sleep 1000' USR1; sleep 1000 & wait
    ready_log_line: db is ready
  app:
    command: exec sleep 1000
    depends_on: {{db: {{condition: process_log_ready}}}}
"
    ));
    let (mut init, stdout) = Launch::new(&["--config", config.path()]).start_holding_stdout();
    let flood = init.wait_for_node("flood", "running", |n| n["state"] == "running");
    let flood_host = init.host_pid_of(flood["pid"].as_i64().unwrap());
    init.wait_for_node("db", "started", |n| n["pid"].is_i64());
    wait_blocked_writing(flood_host);
    assert_eq!(init.node("app")["state"], "pending", "app waits for db's line");
    kill_node(&init, "db", Signal::SIGUSR1, false);
    init.wait_for_node("app", "started on db's line", |n| n["state"] == "running");
    assert_eq!(init.node("db")["state"], "ready");
    wait_blocked_writing(flood_host);

    let reader = read_all_in_thread(stdout);
    init.wait_for_node("flood", "completed", |n| n["state"] == "completed");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
    let text = reader.join().unwrap();
    assert!(
        text.lines().any(|line| init_tests::split_service_line(line, "db").as_deref() == Some("db is ready"))
    );
}

#[test]
fn a_flood_on_a_fast_stdout_leaves_the_init_answering() {
    // About 900 MB framed, read as fast as it comes: reading it must not keep the event loop
    // from anything else while it lasts.
    let config = config_file(
        "processes:\n  flood:\n    entrypoint: [seq, \"1\", \"50000000\"]\n  idle:\n    command: exec sleep 1000\n",
    );
    let (mut init, mut stdout) = Launch::new(&["--config", config.path()]).start_holding_stdout();
    let (flowing, flows) = std::sync::mpsc::channel();
    let reader = thread::spawn(move || {
        let (mut buffer, mut total) = (vec![0; 1 << 16], 0);
        while let Ok(count @ 1..) = stdout.read(&mut buffer) {
            total += count;
            if total >= 10 << 20 {
                let _ = flowing.send(());
            }
        }
    });
    flows.recv_timeout(PATIENCE).expect("the flood reaches stdout");
    // Answered while the flood still runs, not after it.
    assert_eq!(init.node("flood")["state"], "running");
    let (idle_pid, _) = pid_and_restarts(&init, "idle");
    assert_eq!(init.client(&["restart", "idle"]).0, 0);
    init.wait_for_node("idle", "running again", |n| n["state"] == "running" && n["pid"] != idle_pid);
    assert_eq!(init.node("flood")["state"], "running");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
    reader.join().unwrap();
}

#[test]
fn a_stdout_nobody_reads_any_more_costs_the_lines_not_the_init() {
    let config = flood_config();
    let (mut init, stdout) = Launch::new(&["--config", config.path()]).start_holding_stdout();
    init.wait_for_node("idle", "running", |n| n["state"] == "running");
    // The reader goes away (a log collector that died): writes fail with EPIPE from now on.
    drop(stdout);
    init.wait_for_node("flood", "completed", |n| n["state"] == "completed");
    let (idle_pid, _) = pid_and_restarts(&init, "idle");
    assert_eq!(init.client(&["restart", "idle"]).0, 0);
    init.wait_for_node("idle", "running again", |n| n["state"] == "running" && n["pid"] != idle_pid);
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

/// Sends `signal` to the host pid of node `name`'s process (or its group, with `group`).
fn kill_node(init: &Init, name: &str, signal: Signal, group: bool) -> i64 {
    let pid = init.node(name)["pid"].as_i64().expect("the node runs");
    let host = init.host_pid_of(pid);
    let target = if group { Pid::from_raw(-host) } else { Pid::from_raw(host) };
    kill(target, signal).expect("the process exists");
    pid
}

#[test]
fn services_killed_from_outside_are_reported_and_handled_by_their_policy() {
    let config = config_file(
        "processes:
  keeper:
    command: exec sleep 1000
    availability: {restart: always, backoff_seconds: 0.1}
  single:
    command: exec sleep 1000
  family:
    command: sleep 1000 & sleep 1000 & wait
    availability: {restart: on_failure, backoff_seconds: 0.1}
",
    );
    let mut init = Launch::new(&["--config", config.path()]).start();
    for name in ["keeper", "single", "family"] {
        init.wait_for_node(name, "running", |n| n["state"] == "running");
    }
    let old = kill_node(&init, "keeper", Signal::SIGKILL, false);
    init.wait_for_line("keeper: killed by SIGKILL");
    init.wait_for_node("keeper", "restarted", |n| {
        n["state"] == "running" && n["restarts"] == 1 && n["pid"] != old
    });
    kill_node(&init, "single", Signal::SIGKILL, false);
    init.wait_for_line("single: killed by SIGKILL");
    let single = init.wait_for_node("single", "failed", |n| n["state"] == "failed");
    assert_eq!(single["restarts"], 0, "restart: no");
    // The whole process group at once, as `kill -TERM -PGID` from the host would.
    let old = kill_node(&init, "family", Signal::SIGTERM, true);
    init.wait_for_line("family: killed by SIGTERM");
    init.wait_for_node("family", "restarted", |n| n["state"] == "running" && n["pid"] != old);
    assert!(zombie_children(init.host_pid()).is_empty());
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

/// Runs `nix2gpu-init ARGS` inside the init's mount and PID namespaces, on its default control
/// socket, as `docker exec CONTAINER nix2gpu-init ...` does; returns the exit code, stdout and
/// stderr.
fn client_inside(init: &Init, args: &[&str]) -> (i32, String, String) {
    let output = Command::new("nsenter")
        .args(["--target", &init.host_pid().to_string(), "--mount", "--pid", "--"])
        .arg(init_tests::init_binary())
        .args(args)
        .env_remove("NIX2GPU_CONTROL_SOCKET")
        .output()
        .expect("nsenter runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

/// Runs a shell command inside the init's mount namespace; returns its stdout.
fn shell_inside(init: &Init, command: &str) -> String {
    let output = Command::new("nsenter")
        .args(["--target", &init.host_pid().to_string(), "--mount", "sh", "-c", command])
        .output()
        .expect("nsenter runs");
    assert!(output.status.success(), "{command}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The node `name` from `status --json` asked inside the namespace.
fn node_inside(init: &Init, name: &str) -> serde_json::Value {
    let (code, stdout, stderr) = client_inside(init, &["status", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).cloned().unwrap()
}

#[test]
fn deleted_or_moved_control_and_notify_sockets_are_bound_again() {
    let notify = init_tests::fixture("notify.py");
    let config = config_file(&format!(
        "processes:
  late:
    entrypoint: [python3, {notify}, say=waiting, wait=USR1, send=READY=1, pause]
    notify: true
"
    ));
    let mut init = Launch::new(&["--config", config.path()]).socket("").start();
    init.wait_for_service_line("late", "waiting");
    assert_eq!(client_inside(&init, &["status"]).0, 0);
    // A start-up script that cleans /run: the init waits until the directory is gone before
    // it binds again, so the cleanup's rmdir does not fail on a new socket (shell_inside
    // asserts that rm succeeded).
    shell_inside(&init, "rm -rf /run/nix2gpu /run/nix2gpu-notify.sock");
    init.wait_for_line("the control socket /run/nix2gpu/control.sock was deleted; binding it again");
    init.wait_for_line("control socket /run/nix2gpu/control.sock bound again");
    init.wait_for_line("notify socket /run/nix2gpu-notify.sock bound again");
    assert_eq!(shell_inside(&init, "stat -c %a /run/nix2gpu /run/nix2gpu/control.sock"), "700\n600\n");
    let late = node_inside(&init, "late");
    assert_eq!(late["state"], "starting");
    // The notify process sends to the path: its READY=1 reaches the new socket.
    kill(Pid::from_raw(init.host_pid_of(late["pid"].as_i64().unwrap())), Signal::SIGUSR1).unwrap();
    init.wait_for_line("late: ready");
    fn bound_again(init: &mut Init, count: usize) {
        eventually(
            || init.output().iter().filter(|l| l.contains("control.sock bound again")).count() >= count,
            || format!("not bound again {count} times"),
        )
    }
    // The socket alone deleted.
    shell_inside(&init, "rm /run/nix2gpu/control.sock");
    bound_again(&mut init, 2);
    assert_eq!(client_inside(&init, &["status"]).0, 0);
    // Its directory moved away: only the watch on /run sees that.
    shell_inside(&init, "mv /run/nix2gpu /run/old-nix2gpu");
    bound_again(&mut init, 3);
    assert_eq!(client_inside(&init, &["status"]).0, 0);
    // Other files coming and going in the same directories change nothing.
    shell_inside(&init, "touch /run/nix2gpu/other /run/other && rm /run/nix2gpu/other /run/other");
    assert_eq!(client_inside(&init, &["status"]).0, 0);
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
    assert_eq!(init.output().iter().filter(|l| l.contains("control.sock bound again")).count(), 3);
}

#[test]
fn a_read_only_run_is_reported_clearly_and_services_still_run() {
    let notify = init_tests::fixture("notify.py");
    let config = config_file(&format!(
        "processes:
  hello:
    command: echo hello; exec sleep 1000
    availability: {{restart: always}}
  late:
    entrypoint: [python3, {notify}, say=waiting, pause]
    notify: true
"
    ));
    let mut init =
        Launch::new(&["--config", config.path()]).socket("").setup("mount -o remount,ro /run").start();
    init.wait_for_service_line("hello", "hello");
    init.wait_for_service_line("late", "waiting");
    for warning in [
        "warning: cannot prepare /run/sshd: Read-only file system",
        "warning: no control socket (/run/nix2gpu/control.sock: Read-only file system",
        "warning: no notify socket (/run/nix2gpu-notify.sock: Read-only file system",
    ] {
        init.wait_for_line(warning);
    }
    let (code, _, stderr) = client_inside(&init, &["status"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/run/nix2gpu/control.sock does not exist (the init's log says why"), "{stderr}");
    // The supervisor works: a service killed from outside comes back.
    let hello = init
        .namespace_pids()
        .into_iter()
        .find(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\x001000\x00"));
    kill(Pid::from_raw(hello.expect("hello's sleep runs")), Signal::SIGKILL).unwrap();
    init.wait_for_line("hello: killed by SIGKILL");
    eventually(|| init.service_lines("hello").len() >= 2, || "hello did not come back".into());
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

/// Opens a `logs -f` connection on the init's control socket and reads the start of its
/// answer, so the init is known to be following for it.
fn follower(init: &Init) -> std::os::unix::net::UnixStream {
    use std::io::Write;
    let mut stream = std::os::unix::net::UnixStream::connect(init.socket()).expect("the socket accepts");
    stream.write_all(b"{\"v\":1,\"cmd\":\"logs\",\"name\":null,\"lines\":1,\"follow\":true}\n").unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).expect("the history's first line");
    stream
}

#[test]
fn abandoned_log_followers_are_let_go_at_once() {
    // A quiet container: nothing is logged after the start.
    let config = config_file("processes:\n  quiet: {command: echo up; exec sleep 1000}\n");
    let mut init = Launch::new(&["--config", config.path()]).start();
    init.wait_for_service_line("quiet", "up");
    let host = init.host_pid();
    let baseline = open_fds(host).len();
    // Twice as many `logs -f` clients as the socket serves at once, one after another, each
    // gone (Ctrl-C) before the next: none may keep its slot or descriptor.
    for _ in 0..128 {
        drop(follower(&init));
    }
    let (code, _, stderr) = init.client(&["health"]);
    assert_eq!(code, 0, "health answers: {stderr}");
    eventually(|| open_fds(host).len() <= baseline, || format!("descriptors kept: {:?}", open_fds(host)));
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn descriptors_used_up_cost_no_cpu_and_the_init_recovers() {
    let config = config_file(
        "processes:\n  idle:\n    command: echo up; exec sleep 1000\n    availability: {restart: always, backoff_seconds: 0.2}\n",
    );
    // The init may hold 32 descriptors: 40 `logs -f` clients want more than that.
    let mut init = Launch::new(&["--config", config.path()]).setup("ulimit -n 32").start();
    let idle = init.wait_for_node("idle", "running", |n| n["state"] == "running");
    let host = init.host_pid();
    let followers: Vec<_> = (0..16).map(|_| follower(&init)).collect();
    let queued: Vec<_> =
        (0..24).map(|_| std::os::unix::net::UnixStream::connect(init.socket()).unwrap()).collect();
    eventually(
        || open_fds(host).len() >= 32,
        || format!("the clients never took the init's descriptors: {:?}", open_fds(host)),
    );
    // Connections are still queued and every accept fails with EMFILE: one second of that.
    let ticks = cpu_ticks(host);
    thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(host) - ticks;
    eprintln!("one second without descriptors: {spent} ticks of the init's CPU");
    assert!(spent <= 5, "the init spun: {spent} ticks in one second");
    // A service killed meanwhile cannot be started again (no descriptors for its pipes)...
    let old = kill_node_by_host(&init, idle["pid"].as_i64().unwrap());
    init.wait_for_line("idle: killed by SIGKILL");
    let failed = init.wait_for_line("idle: could not start");
    assert!(failed.contains("Too many open files"), "{failed}");
    // ...until the descriptors are free again.
    drop(followers);
    drop(queued);
    let idle = init.wait_for_node("idle", "running again", |n| n["state"] == "running" && n["pid"] != old);
    eprintln!("idle back after {} restarts", idle["restarts"]);
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

/// SIGKILLs the process the init's namespace calls `pid`; returns `pid`.
fn kill_node_by_host(init: &Init, pid: i64) -> i64 {
    kill(Pid::from_raw(init.host_pid_of(pid)), Signal::SIGKILL).expect("the process exists");
    pid
}

/// Bytes that look random (a fixed linear congruential sequence, so every run is the same).
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

/// The versioned file of one of NVIDIA's libraries from Debian's packages (`cargo xtask
/// fetch-nvidia`).
fn nvidia_library(prefix: &str) -> Vec<u8> {
    let dir = init_tests::nvidia_root().join("usr/lib/x86_64-linux-gnu/nvidia/current");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(prefix) && name.matches('.').count() >= 4 && !path.is_symlink()
        })
        .unwrap_or_else(|| panic!("no {prefix}.<version> in {}", dir.display()));
    std::fs::read(file).unwrap()
}

/// An init as PID 1 with a GPU requested (1 s of waiting at most), a service beside it, and
/// `libraries` (name, content) where the toolkit puts the driver, with the control device;
/// namespaces as in gpu_node.rs, so the machine is never changed.
fn init_with_driver_files(test: &str, libraries: &[(&str, Vec<u8>)]) -> (Init, init_tests::TempConfig) {
    let staging = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(test);
    std::fs::create_dir_all(&staging).unwrap();
    let config = config_file(
        "nix2gpu:\n  gpu: {enable: true, wait_seconds: 1}\nprocesses:\n  idle: {command: echo up; exec sleep 1000}\n",
    );
    let mut launch = Launch::new(&["--config", config.path()])
        .env("NVIDIA_VISIBLE_DEVICES", "all")
        .setup(init_tests::PRIVATE_DEV)
        .setup("touch /dev/nvidiactl");
    for command in init_tests::PRIVATE_GPU_SYSTEM {
        launch = launch.setup(command);
    }
    for (name, content) in libraries {
        let staged = staging.join(name);
        std::fs::write(&staged, content).unwrap();
        launch = launch.setup(&format!("cp {} /usr/local/nvidia/lib64/{name}", staged.display()));
    }
    (launch.start(), config)
}

#[test]
fn garbage_and_truncated_driver_libraries_get_a_verdict_that_names_them() {
    let cuda = nvidia_library("libcuda.so");
    let (mut init, _config) = init_with_driver_files(
        "gpu-garbage",
        &[("libnvidia-ml.so.1", garbage(1 << 20, 1)), ("libcuda.so.1", cuda[..cuda.len() / 2].to_vec())],
    );
    init.wait_for_line("gpu: exited with code 1");
    let gpu = init.status()["gpu"].clone();
    assert_eq!(gpu["verdict"], "not_injected", "{gpu}");
    let message = gpu["message"].as_str().unwrap();
    assert!(
        message.contains(
            "found but not complete ELF libraries (truncated, or not libraries at all): \
             /usr/local/nvidia/lib64/libnvidia-ml.so.1, /usr/local/nvidia/lib64/libcuda.so.1"
        ),
        "{message}"
    );
    init.wait_for_service_line("gpu", "found but not complete ELF libraries");
    assert_eq!(init.node("idle")["state"], "running", "the rest goes on");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn a_corrupted_driver_library_gets_a_verdict_and_the_init_survives() {
    // NVIDIA's real libnvidia-ml with its headers intact (it looks complete) and garbage from
    // the second page up to its section headers: what a bad copy or a broken disk leaves.
    let mut nvml = nvidia_library("libnvidia-ml.so");
    let end = nvml.len() - 64 * 1024;
    nvml[4096..end].copy_from_slice(&garbage(end - 4096, 2));
    let (mut init, _config) = init_with_driver_files(
        "gpu-corrupt",
        &[("libnvidia-ml.so.1", nvml), ("libcuda.so.1", nvidia_library("libcuda.so"))],
    );
    init.wait_for_line("gpu: exited with code 0");
    let gpu = init.status()["gpu"].clone();
    assert_eq!(gpu["verdict"], "driver_not_answering", "{gpu}");
    // The loader refuses it (its dependency names are garbage now); a crash would be reported
    // as such, from the probe's child process.
    let kind = gpu["probe"]["nvml_error"]["kind"].as_str().unwrap_or("").to_string();
    assert!(["crashed", "library_not_loaded", "symbol_missing"].contains(&kind.as_str()), "{gpu}");
    let message = gpu["message"].as_str().unwrap();
    assert!(
        message.starts_with("the driver's libraries are in place but the driver does not answer (NVML: "),
        "{message}"
    );
    assert!(message.chars().all(|c| c == ' ' || c.is_ascii_graphic()), "printable: {message}");
    assert_eq!(init.node("idle")["state"], "running", "the rest goes on");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

/// Reads the init's stdout to its end on a thread of its own (the init's output may stall
/// until someone reads it); join for the text.
fn read_all_in_thread(mut stdout: std::process::ChildStdout) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).expect("the init's stdout is text");
        text
    })
}

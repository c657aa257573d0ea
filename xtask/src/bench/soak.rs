//! `cargo xtask bench soak`: ten minutes of restarts, probes, orphans and log traffic against
//! the init as PID 1, with its resident memory, open descriptors and CPU time sampled every
//! five seconds. The curve goes into BENCHMARKS.md under its own heading; the targets are that
//! memory and descriptors stay flat after the first minute (the warm-up, in which buffers and
//! tables grow to their working size).
//!
//! The load, all at once for the whole run:
//! - operator restarts through the control socket, one every 250 ms, round-robin over four
//!   workers, and a process that fails after 0.3 s, restarted with backoff;
//! - an HTTP readiness probe and a TCP liveness probe on a Python web server every 200 ms,
//!   and an exec probe every 500 ms;
//! - a process printing 200 lines every 50 ms, the web server's request log, and a `logs -f`
//!   client following everything;
//! - 100 orphans a second, left to PID 1 to reap;
//! - every five seconds, `status`, `logs -n 100`, `GET /metrics` and `GET /status`.
//!
//! `SOAK_SECONDS` shortens the run while working on the bench itself.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::measure::compile_fixture;
use super::process::{children, kill_and_reap, signal, vm_rss_kb, wait_exit};
use super::report::{Table, package_version, stdout_of, target};

/// The heading that starts this part of BENCHMARKS.md (`bench soak` replaces from here on).
pub const HEADING: &str = "# Soak";
const DURATION: Duration = Duration::from_secs(600);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Rows of the table in BENCHMARKS.md (every sample is printed while the bench runs).
const ROW_EVERY: Duration = Duration::from_secs(30);
const WARMUP: Duration = Duration::from_secs(60);
const RESTART_EVERY: Duration = Duration::from_millis(250);
const WORKERS: usize = 4;
/// Lines kept per process for `logs`: small enough that every process's ring is full within
/// the warm-up (the workers write a line a second each), so that what grows after it is not
/// the rings filling up to their configured size. With the default 1000, a process writing a
/// line a second fills its ring for 17 minutes.
const LOG_LENGTH: usize = 50;
/// Growth after the warm-up that still counts as flat.
const RSS_GROWTH_MAX_KB: u64 = 256;
/// Descriptors that come and go with the load (a probe's pipe, a request being served) and
/// may be open when a sample is taken.
const FDS_IN_FLIGHT: usize = 3;
/// Bound on the start (the web server ready) and on the stop.
const LIMIT: Duration = Duration::from_secs(30);

/// One sample of the init.
struct Sample {
    at: Duration,
    rss_kb: u64,
    anon_kb: u64,
    fds: usize,
    cpu: Duration,
    restarts: u64,
    lines: u64,
}

pub struct Results {
    samples: Vec<Sample>,
    duration: Duration,
    /// Output lines per process name, from the init's stdout.
    lines_by_name: BTreeMap<String, u64>,
    operator_restarts: u64,
    /// Restarts the init made by policy, of the failing process (from `status` at the end).
    policy_restarts: u64,
    control_requests: u64,
    http_requests: u64,
    zombies_at_end: usize,
    exit_code: Option<i32>,
    date: String,
    machine: String,
}

pub fn measure(ours: &Path) -> Result<Results, String> {
    let duration = match std::env::var("SOAK_SECONDS") {
        Ok(seconds) => {
            Duration::from_secs(seconds.parse().map_err(|_| format!("SOAK_SECONDS={seconds}: not a number"))?)
        }
        Err(_) => DURATION,
    };
    let storm = compile_fixture("fixtures/orphan_storm.c", "orphan_storm")?;
    let dir = crate::root().join("target/bench/soak");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (web_port, health_port) = (free_port()?, free_port()?);
    let config = dir.join("config.yaml");
    fs::write(&config, workload(&storm, web_port, health_port))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let socket = std::env::temp_dir().join(format!("nix2gpu-soak-{}.sock", std::process::id()));
    let mut init = Soaked::start(ours, &config, &socket)?;
    let result = init.run(duration, health_port);
    let stopped = init.stop();
    let mut results = result?;
    results.exit_code = stopped?;
    results.duration = duration;
    Ok(results)
}

/// The configuration the init runs: see the module documentation.
fn workload(storm: &Path, web_port: u16, health_port: u16) -> String {
    let workers: String = (1..=WORKERS)
        .map(|n| format!("  worker{n}:\n    command: echo worker up; exec sleep 100000\n"))
        .collect();
    format!(
        r#"log_length: {LOG_LENGTH}
nix2gpu:
  gpu: {{enable: false}}
  ssh: {{enable: false}}
  tailscale: {{enable: false}}
  health: {{listen: "127.0.0.1:{health_port}"}}
processes:
  web:
    entrypoint: [python3, -m, http.server, --bind, 127.0.0.1, "{web_port}"]
    readiness_probe: {{http_get: {{port: {web_port}, path: /}}, period_seconds: 0.2}}
    liveness_probe: {{tcp_socket: {{port: {web_port}}}, period_seconds: 0.2, initial_delay_seconds: 5}}
    availability: {{restart: always}}
  checked:
    command: exec sleep 100000
    readiness_probe: {{exec: {{command: "true"}}, period_seconds: 0.5}}
  chatter:
    command: while :; do seq 1 200; sleep 0.05; done
  orphans:
    command: while :; do {storm} 100 && echo storm; sleep 1; done
  crasher:
    command: echo crashing; sleep 0.3; exit 1
    availability: {{restart: on_failure, backoff_seconds: 0.1}}
{workers}"#,
        storm = storm.display()
    )
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The init under soak: PID 1 of fresh namespaces, its output counted by name.
struct Soaked {
    unshare: Child,
    pid: u32,
    socket: PathBuf,
    lines: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Soaked {
    fn start(ours: &Path, config: &Path, socket: &Path) -> Result<Self, String> {
        let _ = fs::remove_file(socket);
        let mut unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c"])
            .arg("mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var && exec \"$@\"")
            .arg("sh")
            .arg(ours)
            .arg("--config")
            .arg(config)
            .env("NIX2GPU_CONTROL_SOCKET", socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let lines = Arc::new(Mutex::new(BTreeMap::new()));
        if let Some(stdout) = unshare.stdout.take() {
            count_lines(stdout, Arc::clone(&lines));
        }
        let deadline = Instant::now() + LIMIT;
        let pid = loop {
            if let Some(pid) = children(unshare.id()).first() {
                break *pid;
            }
            if Instant::now() > deadline {
                let _ = kill_and_reap(&mut unshare, LIMIT);
                return Err("unshare never started the init".into());
            }
            thread::sleep(Duration::from_millis(10));
        };
        let mut soaked = Soaked { unshare, pid, socket: socket.to_path_buf(), lines };
        if let Err(error) = soaked.wait_ready() {
            // `--kill-child`: the namespace goes with unshare.
            let _ = kill_and_reap(&mut soaked.unshare, LIMIT);
            return Err(error);
        }
        Ok(soaked)
    }

    /// Waits until the web server answers its readiness probe (the failing process never will).
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let status = self.request(r#"{"v":1,"cmd":"status"}"#, r#"{"type":"status""#);
            if status.as_deref().is_ok_and(|s| s.contains(r#""name":"web","state":"ready""#)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the web server was not ready within {LIMIT:?}: {status:?}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The load and the sampling, for `duration`.
    fn run(&mut self, duration: Duration, health_port: u16) -> Result<Results, String> {
        let _follower = self.follow()?;
        let started = Instant::now();
        let (mut operator_restarts, mut control_requests, mut http_requests) = (0u64, 0u64, 0u64);
        let mut samples = vec![self.sample(Duration::ZERO, 0)?];
        let mut next_sample = started + SAMPLE_EVERY;
        let mut tick = 0usize;
        let end = started + duration;
        eprintln!("bench: soak for {duration:?}: time, RSS, anon, fds, CPU, operator restarts, lines");
        while Instant::now() < end {
            let due = started + RESTART_EVERY * u32::try_from(tick).unwrap_or(u32::MAX);
            thread::sleep(due.saturating_duration_since(Instant::now()));
            let worker = format!("worker{}", tick % WORKERS + 1);
            self.request(&format!(r#"{{"v":1,"cmd":"restart","name":"{worker}"}}"#), r#"{"type":"done""#)?;
            operator_restarts += 1;
            tick += 1;
            if Instant::now() >= next_sample {
                self.request(r#"{"v":1,"cmd":"status"}"#, r#"{"type":"status""#)?;
                self.request(
                    r#"{"v":1,"cmd":"logs","name":null,"lines":100,"follow":false}"#,
                    r#"{"type":"log""#,
                )?;
                control_requests += 2;
                for path in ["/metrics", "/status"] {
                    http_get(health_port, path)?;
                    http_requests += 1;
                }
                let sample = self.sample(started.elapsed(), operator_restarts)?;
                eprintln!(
                    "bench: {:>5.0} s {:>6} kB {:>6} kB {:>3} fds {:>6.2} s {:>5} {:>8}",
                    sample.at.as_secs_f64(),
                    sample.rss_kb,
                    sample.anon_kb,
                    sample.fds,
                    sample.cpu.as_secs_f64(),
                    sample.restarts,
                    sample.lines
                );
                samples.push(sample);
                next_sample += SAMPLE_EVERY;
            }
        }
        let status = self.request(r#"{"v":1,"cmd":"status"}"#, r#"{"type":"status""#)?;
        control_requests += 1 + operator_restarts;
        let policy_restarts = number_after(&status, &[r#""name":"crasher""#, r#""restarts":"#]).unwrap_or(0);
        let zombies_at_end = zombies_of(self.pid);
        Ok(Results {
            samples,
            duration,
            lines_by_name: self.lines.lock().map(|l| l.clone()).unwrap_or_default(),
            operator_restarts,
            policy_restarts,
            control_requests,
            http_requests,
            zombies_at_end,
            exit_code: None,
            date: stdout_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
            machine: machine(),
        })
    }

    /// A `logs -f` client for the whole run, its lines read and dropped by a thread.
    fn follow(&self) -> Result<UnixStream, String> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|e| format!("cannot follow the logs: {e}"))?;
        stream
            .write_all(b"{\"v\":1,\"cmd\":\"logs\",\"name\":null,\"lines\":0,\"follow\":true}\n")
            .map_err(|e| format!("cannot follow the logs: {e}"))?;
        let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
        thread::spawn(move || {
            let mut sink = [0u8; 64 * 1024];
            while reader.read(&mut sink).is_ok_and(|n| n > 0) {}
        });
        Ok(stream)
    }

    /// Sends one request on a fresh connection; the answer must start as `expected` does.
    fn request(&self, request: &str, expected: &str) -> Result<String, String> {
        let stream = UnixStream::connect(&self.socket).map_err(|e| format!("control socket: {e}"))?;
        stream.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
        (&stream).write_all(format!("{request}\n").as_bytes()).map_err(|e| format!("{request}: {e}"))?;
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer).map_err(|e| format!("{request}: {e}"))?;
        if !answer.starts_with(expected) {
            return Err(format!("{request}: unexpected answer {answer}"));
        }
        Ok(answer)
    }

    fn sample(&self, at: Duration, restarts: u64) -> Result<Sample, String> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).map_err(|e| e.to_string())?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().trim_end_matches("kB").trim().parse().ok())
        };
        let fds = fs::read_dir(format!("/proc/{}/fd", self.pid)).map_err(|e| e.to_string())?.count();
        let lines = self.lines.lock().map(|l| l.values().sum()).unwrap_or(0);
        Ok(Sample {
            at,
            rss_kb: vm_rss_kb(self.pid)?,
            anon_kb: field("RssAnon:").unwrap_or(0),
            fds,
            cpu: cpu_time(self.pid)?,
            restarts,
            lines,
        })
    }

    /// SIGTERM, then the init's exit code (bounded; SIGKILL after the bound).
    fn stop(mut self) -> Result<Option<i32>, String> {
        signal(self.pid, "TERM")?;
        match wait_exit(&mut self.unshare, LIMIT, Duration::from_millis(20)) {
            Ok(status) => Ok(status.code()),
            Err(e) => {
                let _ = kill_and_reap(&mut self.unshare, LIMIT);
                Err(e)
            }
        }
    }
}

/// Counts the init's output lines by the name before ` | `, from a thread of its own.
fn count_lines(stdout: impl Read + Send + 'static, counts: Arc<Mutex<BTreeMap<String, u64>>>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            let name = text.split_once(" | ").map_or("?", |(name, _)| name.trim_end()).to_string();
            if let Ok(mut counts) = counts.lock() {
                *counts.entry(name).or_default() += 1;
            }
            line.clear();
        }
    });
}

fn http_get(port: u16, path: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("GET {path}: {e}"))?;
    stream.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| format!("GET {path}: {e}"))?;
    if answer.starts_with(b"HTTP/1.0 200") { Ok(()) } else { Err(format!("GET {path}: not 200")) }
}

/// User and system CPU time of a process, from /proc/PID/stat (clock ticks of 1/100 s).
fn cpu_time(pid: u32) -> Result<Duration, String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // utime and stime are fields 14 and 15; `fields` starts at field 3.
    let tick = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Ok(Duration::from_millis((tick(14) + tick(15)) * 10))
}

/// Zombies whose parent is `pid`.
fn zombies_of(pid: u32) -> usize {
    let parent = pid.to_string();
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| fs::read_to_string(entry.path().join("stat")).ok())
                .filter(|stat| {
                    let rest: Vec<&str> = stat
                        .rsplit_once(')')
                        .map(|(_, r)| r.split_whitespace().collect())
                        .unwrap_or_default();
                    rest.first() == Some(&"Z") && rest.get(1) == Some(&parent.as_str())
                })
                .count()
        })
        .unwrap_or(0)
}

/// The number that follows the last of `keys` in `json`, each key searched after the one
/// before it (a node's name, then one of its fields).
fn number_after(json: &str, keys: &[&str]) -> Option<u64> {
    let mut rest = json;
    for key in keys {
        rest = &rest[rest.find(key)? + key.len()..];
    }
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn machine() -> String {
    let cpus = thread::available_parallelism().map_or(0, usize::from);
    let kernel = stdout_of("uname", &["-r"]).unwrap_or_default();
    format!("{cpus} CPUs, Linux {kernel}")
}

pub fn render(results: &Results) -> String {
    let mut table =
        Table::new(&["time", "RSS (kB)", "anon (kB)", "fds", "CPU (s)", "operator restarts", "lines out"]);
    let every = (ROW_EVERY.as_secs() / SAMPLE_EVERY.as_secs()).max(1) as usize;
    let last = results.samples.len().saturating_sub(1);
    let shown = results.samples.iter().enumerate().filter(|(i, _)| i % every == 0 || *i == last);
    for (_, sample) in shown {
        let seconds = sample.at.as_secs();
        table.row(vec![
            format!("{}:{:02}", seconds / 60, seconds % 60),
            sample.rss_kb.to_string(),
            sample.anon_kb.to_string(),
            sample.fds.to_string(),
            format!("{:.2}", sample.cpu.as_secs_f64()),
            sample.restarts.to_string(),
            sample.lines.to_string(),
        ]);
    }
    let settled: Vec<&Sample> = results.samples.iter().filter(|s| s.at >= WARMUP).collect();
    let at_warmup = settled.first().map(|s| s.rss_kb);
    let rss_max = settled.iter().map(|s| s.rss_kb).max();
    let growth = at_warmup.zip(rss_max).map(|(start, max)| max.saturating_sub(start));
    let fds: Vec<usize> = settled.iter().map(|s| s.fds).collect();
    let (fd_min, fd_max) = (fds.iter().min().copied(), fds.iter().max().copied());
    let mut targets = Table::new(&["target", "threshold", "measured", "result"]);
    targets.row(target(
        "RSS growth after the first minute".into(),
        format!("<= {RSS_GROWTH_MAX_KB} kB"),
        growth.map(|g| format!("{g} kB ({} → max {} kB)", at_warmup.unwrap_or(0), rss_max.unwrap_or(0))),
        growth.is_some_and(|g| g <= RSS_GROWTH_MAX_KB),
    ));
    targets.row(target(
        "open descriptors after the first minute".into(),
        format!("no growth: max - min <= {FDS_IN_FLIGHT} (in flight)"),
        fd_min.zip(fd_max).map(|(min, max)| format!("{min}..{max}")),
        fd_min.zip(fd_max).is_some_and(|(min, max)| max - min <= FDS_IN_FLIGHT),
    ));
    targets.row(target(
        "zombies at the end, exit code after SIGTERM".into(),
        "0, 0".into(),
        Some(format!(
            "{}, {}",
            results.zombies_at_end,
            results.exit_code.map_or("none".into(), |c| c.to_string())
        )),
        results.zombies_at_end == 0 && results.exit_code == Some(0),
    ));
    let cpu = results.samples.last().map_or(0.0, |s| s.cpu.as_secs_f64());
    let lines: Vec<String> = results.lines_by_name.iter().map(|(name, n)| format!("{name} {n}")).collect();
    let storms = results.lines_by_name.get("orphans").copied().unwrap_or(0);
    let notes = [
        format!(
            "Measured on {} ({}), {}; the init as PID 1 of fresh PID and mount namespaces, its stdout \
             read by the bench.",
            results.date,
            results.machine,
            package_version(None)
        ),
        format!(
            "The load, all the time: {} operator restarts (one every {} ms, four workers), {} restarts by \
             policy (a process failing after 0.3 s, with backoff); HTTP and TCP probes every 200 ms and an \
             exec probe every 500 ms; {} orphans reaped ({} storms of 100); {} control requests and {} \
             HTTP requests besides the restarts; a `logs -f` client throughout.",
            results.operator_restarts,
            RESTART_EVERY.as_millis(),
            results.policy_restarts,
            storms * 100,
            storms,
            results.control_requests - results.operator_restarts,
            results.http_requests,
        ),
        format!(
            "Output lines by name: {}. Each process keeps its last {LOG_LENGTH} lines for `logs` \
             (`log_length`), so that every ring is full within the warm-up; with the default 1000, \
             a process writing a line a second fills its ring for 17 minutes and the curve would \
             show that, not a leak.",
            lines.join(", ")
        ),
        format!(
            "The init's CPU time over the {} s: {cpu:.1} s. RSS is VmRSS (the static binary's pages \
             included); anon is RssAnon, what the init allocated.",
            results.duration.as_secs()
        ),
    ];
    let notes: Vec<String> = notes.iter().map(|n| format!("- {n}")).collect();
    format!(
        "{HEADING}\n\n`cargo xtask bench soak`: {} s of restarts, probes, orphans and log traffic against the \
         init as PID 1, sampled every {} s (every {} s shown; the first minute is the warm-up).\n\n{}\n\
         ## Targets (soak)\n\n{}\n## Notes (soak)\n\n{}\n",
        results.duration.as_secs(),
        SAMPLE_EVERY.as_secs(),
        ROW_EVERY.as_secs(),
        table.render(),
        targets.render(),
        notes.join("\n")
    )
}

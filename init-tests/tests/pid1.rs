//! The init as PID 1 (and as a subreaper) running a main process: the scenarios of tini's and
//! dumb-init's test suites, plus the failures they do not test.

use std::time::{Duration, Instant};

use init_tests::{Launch, alive, eventually, fixture, processes, zombie_children};
use nix::sys::signal::Signal;

fn sh(script: &str) -> Launch {
    Launch::new(&["--", "sh", "-c", script])
}

#[test]
fn exit_codes_0_to_255_round_trip() {
    for code in 0..=255 {
        let mut init = sh(&format!("exit {code}")).start();
        assert_eq!(init.wait_exit(), code, "output: {:?}", init.output());
    }
}

#[test]
fn death_by_signal_is_128_plus_n() {
    for (signal, code) in [("KILL", 137), ("TERM", 143), ("USR1", 138), ("SEGV", 139)] {
        let mut init = sh(&format!("kill -{signal} $$")).start();
        assert_eq!(init.wait_exit(), code, "{signal}");
        init.wait_for_line(&format!("main: killed by SIG{signal}"));
        init.wait_for_line(&format!("main process ended; stopping everything (exit code {code})"));
    }
}

#[test]
fn signals_sent_to_the_init_reach_the_main_process() {
    let mut init = Launch::new(&["--", "sh", &fixture("record-signals.sh")]).start();
    init.wait_for_line("ready");
    for signal in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGCONT,
        Signal::SIGALRM,
    ] {
        init.signal(signal);
        let name = &signal.as_str()[3..];
        init.wait_for_line(&format!("got {name}"));
    }
    init.signal(Signal::SIGTERM);
    init.wait_for_line("got TERM");
    assert_eq!(init.wait_exit(), 0);
    assert!(!init.output().iter().any(|l| l.contains("got CHLD")), "SIGCHLD is never forwarded");
}

/// The signal mask in `field` (SigIgn, SigCgt, ...) of a /proc/PID/status text, as a list of
/// signal numbers.
fn signal_list(status: &str, field: &str) -> Vec<u32> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    let mask = u64::from_str_radix(hex.trim(), 16).unwrap();
    (1..=64).filter(|signal| mask & (1 << (signal - 1)) != 0).collect()
}

#[test]
fn children_start_with_default_signal_actions_and_the_init_catches_only_what_they_reset() {
    // The main process shares the init's stdout: its lines come unprefixed.
    let mut init = sh("grep -E '^SigIgn' /proc/self/status; echo listed; exec sleep 1000").start();
    init.wait_for_line("listed");
    let main = init.output().join("\n");
    assert_eq!(signal_list(&main, "SigIgn"), Vec::<u32>::new(), "SIGPIPE is not left ignored: {main}");
    // A child resets exactly these before it unblocks signals (spawn::child's HANDLED): no
    // handler of the init may run in a child that still shares its memory.
    let status = std::fs::read_to_string(format!("/proc/{}/status", init.host_pid())).unwrap();
    let caught = signal_list(&status, "SigCgt");
    assert!(caught.iter().all(|s| [7, 11, 32, 33].contains(s)), "the init catches {caught:?}");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 143);
}

#[test]
fn forwarding_to_the_process_group_is_a_setting() {
    let config = std::env::temp_dir().join(format!("nix2gpu-group-{}.yaml", std::process::id()));
    std::fs::write(&config, "nix2gpu:\n  forward_signals_to: group\n").unwrap();
    // A background job of a non-interactive shell stays in the shell's process group. The
    // parent's trap is set before the child can say it is ready.
    let script = "trap 'echo parent got USR1' USR1; \
                  sh -c 'trap \"echo child got USR1; exit 0\" USR1; echo child ready; sleep 1000 & wait' & \
                  wait $!; wait $!";
    let mut init = Launch::new(&["--config", config.to_str().unwrap(), "--", "sh", "-c", script]).start();
    init.wait_for_line("child ready");
    init.signal(Signal::SIGUSR1);
    init.wait_for_line("child got USR1");
    init.wait_for_line("parent got USR1");
    assert_eq!(init.wait_exit(), 0);
    std::fs::remove_file(config).unwrap();
}

#[test]
fn orphans_are_reaped_as_pid_1() {
    let mut init = Launch::new(&["--", "sh", &fixture("orphans.sh"), "150"]).start();
    init.wait_for_line("made 150 orphans");
    let line = init.wait_for_line("zombies=");
    assert_eq!(line, "zombies=0 sleepers=0");
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn orphans_are_reaped_as_a_subreaper() {
    // Not PID 1: orphans must still come to the init (PR_SET_CHILD_SUBREAPER), not to the
    // machine's real init, and be reaped there.
    let script = "(sleep 30 & echo orphan=$!); i=0; while [ $i -lt 100 ]; do (true &); i=$((i+1)); done; \
                  echo made; sleep 1000";
    let mut init = sh(script).as_plain_process().start();
    let orphan: i32 = init.wait_for_line("orphan=")["orphan=".len()..].parse().unwrap();
    init.wait_for_line("made");
    let me = init.host_pid();
    assert_eq!(processes()[&orphan].ppid, me, "the orphan was re-parented to the init");
    eventually(|| zombie_children(me).is_empty(), || format!("zombies left: {:?}", zombie_children(me)));
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 143, "sh dies of the forwarded SIGTERM");
    assert!(!alive(orphan), "the leftover orphan was stopped before the init exited");
}

#[test]
fn a_missing_command_exits_127_and_says_so() {
    let mut init = Launch::new(&["--", "no-such-program-here"]).start();
    assert_eq!(init.wait_exit(), 127);
    init.wait_for_line("cannot run `no-such-program-here`: not found in PATH");
    let mut init = Launch::new(&["--", "/no/such/file"]).start();
    assert_eq!(init.wait_exit(), 127);
    init.wait_for_line("cannot run `/no/such/file`: it does not exist");
}

#[test]
fn a_command_that_is_not_executable_exits_126_and_says_so() {
    let plain_file = std::env::temp_dir().join(format!("nix2gpu-noexec-{}", std::process::id()));
    std::fs::write(&plain_file, "echo should not run\n").unwrap();
    let mut init = Launch::new(&["--", plain_file.to_str().unwrap()]).start();
    assert_eq!(init.wait_exit(), 126);
    init.wait_for_line(&format!("cannot run `{}`: not executable (Permission denied", plain_file.display()));
    std::fs::remove_file(plain_file).unwrap();
    let mut init = Launch::new(&["--", "/etc"]).start();
    assert_eq!(init.wait_exit(), 126);
}

/// What only the exec can find out (here: no ELF and no `#!` line) the child reports on its
/// stderr, exiting 126 as a shell would.
#[test]
fn a_file_the_kernel_cannot_execute_exits_126_and_says_so() {
    let garbage = std::env::temp_dir().join(format!("nix2gpu-garbage-{}", std::process::id()));
    std::fs::write(&garbage, [0xde, 0xad, 0xbe, 0xef, b'\n']).unwrap();
    std::fs::set_permissions(&garbage, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut init = Launch::new(&["--", garbage.to_str().unwrap()]).start();
    assert_eq!(init.wait_exit(), 126);
    init.wait_for_line(&format!("cannot run `{}`: exec failed (os error 8)", garbage.display()));
    std::fs::remove_file(garbage).unwrap();
}

/// tini's #180/#236: leftovers must get SIGTERM (and a chance to clean up) before the init
/// exits, and SIGKILL only after the grace period.
#[test]
fn leftovers_get_sigterm_then_sigkill_after_the_grace_period() {
    let config = std::env::temp_dir().join(format!("nix2gpu-grace-{}.yaml", std::process::id()));
    std::fs::write(&config, "nix2gpu:\n  shutdown_timeout_seconds: 1\n").unwrap();
    let script = "(trap 'echo polite leftover cleaned up; exit 0' TERM; sleep 1000 & wait) & \
                  (trap '' TERM; echo stubborn ready; exec sleep 1000) & \
                  sleep 0.2; exit 5";
    let mut init = Launch::new(&["--config", config.to_str().unwrap(), "--", "sh", "-c", script]).start();
    init.wait_for_line("stubborn ready");
    let exited = Instant::now();
    init.wait_for_line("main: exited with code 5");
    init.wait_for_line("polite leftover cleaned up");
    init.wait_for_line("sending SIGKILL");
    assert_eq!(init.wait_exit(), 5);
    let elapsed = exited.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "SIGKILL came before the grace period: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "the init took {elapsed:?} to stop the leftovers");
    std::fs::remove_file(config).unwrap();
}

#[test]
fn leftovers_are_stopped_in_subreaper_mode_too() {
    let script = "sleep 1000 & echo leftover=$!; exit 0";
    let mut init = sh(script).as_plain_process().start();
    let leftover: i32 = init.wait_for_line("leftover=")["leftover=".len()..].parse().unwrap();
    assert_eq!(init.wait_exit(), 0);
    assert!(!alive(leftover), "the leftover sleep {leftover} outlived the init");
}

#[test]
fn the_init_exits_at_once_when_nothing_is_left() {
    let started = Instant::now();
    let mut init = sh("exit 0").start();
    assert_eq!(init.wait_exit(), 0);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(!init.output().iter().any(|l| l.contains("sending SIG")), "{:?}", init.output());
}

#[test]
fn without_a_command_or_terminal_the_init_idles_until_sigterm_and_exits_0() {
    let mut init = Launch::new::<&str>(&[]).start();
    init.wait_for_line("no main command");
    init.signal(Signal::SIGHUP);
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn boot_prepares_runtime_dirs_and_the_environment() {
    let script = "stat -c '%n %a' /tmp /var/tmp /run/sshd /var/log /var/empty; \
                  echo TMPDIR=$TMPDIR; echo XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR $(stat -c %a $XDG_RUNTIME_DIR); \
                  echo XDG_CONFIG_HOME=$XDG_CONFIG_HOME";
    let mut init = sh(script).env("HOME", "/root").start();
    assert_eq!(init.wait_exit(), 0);
    for expected in [
        "/tmp 1777",
        "/var/tmp 1777",
        "/run/sshd 755",
        "/var/log 755",
        "/var/empty 755",
        "TMPDIR=/tmp",
        "XDG_RUNTIME_DIR=/run/user/0 700",
        "XDG_CONFIG_HOME=/root/.config",
    ] {
        assert!(init.output().iter().any(|l| l == expected), "missing {expected:?} in {:?}", init.output());
    }
}

#[test]
fn without_root_the_boot_steps_degrade_with_warnings() {
    let command = Launch::new(&["--", "sh", "-c", "echo still running"]).as_plain_process().command();
    let init = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let output = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(init)
        .args(args)
        .env("HOME", "/nonexistent")
        .env("NIX2GPU_CONTROL_SOCKET", init_tests::fresh_socket_path())
        .output()
        .expect("setpriv (util-linux) runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("still running"), "{stdout}");
    assert!(stdout.contains("init | warning: cannot prepare"), "{stdout}");
}

#[test]
fn log_level_comes_from_the_config_and_nix2gpu_log_overrides_it() {
    let config = std::env::temp_dir().join(format!("nix2gpu-level-{}.yaml", std::process::id()));
    std::fs::write(&config, "log_level: warn\n").unwrap();
    let args = ["--config", config.to_str().unwrap(), "--", "true"];
    let mut quiet = Launch::new(&args).start();
    assert_eq!(quiet.wait_exit(), 0);
    assert!(quiet.output().is_empty(), "warn level prints nothing here: {:?}", quiet.output());
    let mut loud = Launch::new(&args).env("NIX2GPU_LOG", "debug").start();
    assert_eq!(loud.wait_exit(), 0);
    assert!(loud.output().iter().any(|l| l.starts_with("init | main: started")), "{:?}", loud.output());
    std::fs::remove_file(config).unwrap();
}

#[test]
fn a_bad_config_exits_78_with_the_location() {
    let config = std::env::temp_dir().join(format!("nix2gpu-bad-{}.yaml", std::process::id()));
    std::fs::write(&config, "log_level: info\nnix2gpu:\n  shutdown_timeout_secs: 3\n").unwrap();
    let mut init = Launch::new(&["--config", config.to_str().unwrap(), "--", "true"]).start();
    assert_eq!(init.wait_exit(), 78);
    let line = init.wait_for_line("unknown key");
    let location = format!("init | error: {}:3:3: ", config.display());
    assert!(line.starts_with(&location), "{line}");
    assert!(
        line.contains("unknown key `shutdown_timeout_secs`; did you mean `shutdown_timeout_seconds`?"),
        "{line}"
    );
    std::fs::remove_file(config).unwrap();
}

//! The supervisors under test (ours, supervisord, s6-svscan and the shell floor), how each is
//! given the same N services, `sleep 1000` each, and how each is started as PID 1.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::contenders::{self, OUR_ENV};

/// The program every service runs, through each supervisor's usual way of starting one.
pub const SERVICE: &str = "sleep 1000";

/// Which supervisor, for the parts that differ: configuration and command line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours,
    Supervisord,
    S6,
    /// `sh` starting the services in the background and waiting: what any supervisor must at
    /// least do (fork and exec each), with nothing else.
    Floor,
}

/// One supervisor: ours, a peer, or the floor.
pub struct Supervisor {
    /// Short name for the tables.
    pub name: &'static str,
    kind: Kind,
    pub path: PathBuf,
    /// Debian package that ships it (the floor's `sh` is dash's); None for ours.
    pub package: Option<&'static str>,
}

impl Supervisor {
    pub fn is_ours(&self) -> bool {
        self.kind == Kind::Ours
    }

    pub fn is_floor(&self) -> bool {
        self.kind == Kind::Floor
    }

    /// Whether SIGTERM stops it: not the floor, since PID 1 ignores every signal it has no
    /// handler for, and `sh` installs none for SIGTERM.
    pub fn stops_on_sigterm(&self) -> bool {
        !self.is_floor()
    }

    /// Which processes its memory and context switches are summed over (see
    /// `services::supervision`), for the report.
    pub fn processes(&self) -> &'static str {
        match self.kind {
            Kind::Ours => "the init",
            Kind::Supervisord => "supervisord (python3)",
            Kind::S6 => "s6-svscan + N s6-supervise",
            Kind::Floor => "sh",
        }
    }

    /// The command line as the report shows it, for N services.
    pub fn invocation(&self) -> String {
        match self.kind {
            Kind::Ours => {
                let env: Vec<String> = OUR_ENV.iter().map(|(k, v)| format!("{k}={v} ")).collect();
                format!("{}nix2gpu-init --config ours-N.yaml", env.concat())
            }
            Kind::Supervisord => "supervisord -n -c supervisord-N.conf".into(),
            Kind::S6 => "s6-svscan -c N scandir-N".into(),
            Kind::Floor => "sh floor-N.sh".into(),
        }
    }

    /// Writes this supervisor's configuration for `count` services under `dir`, afresh (s6
    /// keeps state in its service directories, and a run must not start from the last one's),
    /// and returns the command that starts it as PID 1 of fresh namespaces.
    pub fn prepare(&self, count: usize, dir: &Path) -> Result<Command, String> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let argv = match self.kind {
            Kind::Ours => {
                let config = write(dir.join(format!("ours-{count}.yaml")), &ours_config(count))?;
                vec![self.path.clone().into_os_string(), "--config".into(), config.into_os_string()]
            }
            Kind::Supervisord => {
                let config =
                    write(dir.join(format!("supervisord-{count}.conf")), &supervisord_config(count))?;
                vec![self.path.clone().into_os_string(), "-n".into(), "-c".into(), config.into_os_string()]
            }
            Kind::S6 => {
                let scandir = s6_scandir(&dir.join(format!("scandir-{count}")), count)?;
                let max = OsString::from(count.to_string());
                vec![self.path.clone().into_os_string(), "-c".into(), max, scandir.into_os_string()]
            }
            Kind::Floor => {
                let script = write(dir.join(format!("floor-{count}.sh")), &floor_script(count))?;
                vec![self.path.clone().into_os_string(), script.into_os_string()]
            }
        };
        let mut command = contenders::as_pid1(&argv);
        if self.is_ours() {
            command.envs(OUR_ENV.iter().copied());
        }
        Ok(command)
    }
}

/// Ours, the two peers, then the floor; fails naming the apt package when a peer is missing,
/// because a benchmark that silently skips a peer would publish an incomplete comparison.
pub fn all(ours: PathBuf) -> Result<Vec<Supervisor>, String> {
    let peers = [
        ("supervisord", Kind::Supervisord, "/usr/bin/supervisord", "supervisor"),
        ("s6-svscan", Kind::S6, "/usr/bin/s6-svscan", "s6"),
        ("shell floor", Kind::Floor, "/bin/sh", "dash"),
    ];
    let mut all = vec![Supervisor { name: "nix2gpu-init", kind: Kind::Ours, path: ours, package: None }];
    for (name, kind, path, package) in peers {
        let path = Path::new(path);
        if !path.is_file() {
            return Err(format!("{} is missing: apt-get install -y {package}", path.display()));
        }
        all.push(Supervisor { name, kind, path: path.to_path_buf(), package: Some(package) });
    }
    // s6-svscan starts one s6-supervise per service: without it s6 would start nothing.
    if !Path::new("/usr/bin/s6-supervise").is_file() {
        return Err("/usr/bin/s6-supervise is missing: apt-get install -y s6".into());
    }
    Ok(all)
}

/// The name of service `index` (from 1), the same for every supervisor.
fn service_name(index: usize) -> String {
    format!("s{index:04}")
}

fn ours_config(count: usize) -> String {
    let mut text = String::from("processes:\n");
    for index in 1..=count {
        let _ = writeln!(text, "  {}: {{command: \"exec {SERVICE}\"}}", service_name(index));
    }
    text
}

/// supervisord in the foreground, with its own log at warn level and discarded (ours runs at
/// warn too); each program's output discarded, no restarts, and `startsecs=0` so a program
/// counts as running as soon as it has started, as in ours.
fn supervisord_config(count: usize) -> String {
    let mut text = String::from(
        "[supervisord]\nnodaemon=true\nloglevel=warn\nlogfile=/dev/null\nlogfile_maxbytes=0\n\
         pidfile=/run/supervisord.pid\n",
    );
    for index in 1..=count {
        let _ = write!(
            text,
            "\n[program:{}]\ncommand={SERVICE}\nautorestart=false\nstartsecs=0\n\
             stdout_logfile=/dev/null\nstdout_logfile_maxbytes=0\n\
             stderr_logfile=/dev/null\nstderr_logfile_maxbytes=0\n",
            service_name(index)
        );
    }
    text
}

/// A fresh scan directory with one service directory per service, each with an executable
/// `run` script that execs the service.
fn s6_scandir(scandir: &Path, count: usize) -> Result<PathBuf, String> {
    if scandir.exists() {
        fs::remove_dir_all(scandir).map_err(|e| format!("cannot remove {}: {e}", scandir.display()))?;
    }
    for index in 1..=count {
        let service = scandir.join(service_name(index));
        fs::create_dir_all(&service).map_err(|e| format!("cannot create {}: {e}", service.display()))?;
        let run = write(service.join("run"), &format!("#!/bin/sh\nexec {SERVICE}\n"))?;
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot make {} executable: {e}", run.display()))?;
    }
    Ok(scandir.to_path_buf())
}

fn floor_script(count: usize) -> String {
    let mut text = format!("{SERVICE} &\n").repeat(count);
    text.push_str("wait\n");
    text
}

/// Writes `text` to `path` and returns the path.
fn write(path: PathBuf, text: &str) -> Result<PathBuf, String> {
    fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

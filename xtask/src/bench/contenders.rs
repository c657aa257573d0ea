//! The inits under test and how each is invoked, so every measurement starts them the same way.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Our log level for every run: at the default (info) our init prints a line per main process,
/// which the peers do not, and the bench should time the init, not its logging.
pub const OUR_ENV: &[(&str, &str)] = &[("NIX2GPU_LOG", "warn")];

/// Mounts tmpfs over /run and /var before exec'ing the init: ours creates /run/sshd, /var/empty
/// and the like at boot and must not touch the host's. The peers get the same wrapper, so the
/// comparison stays fair.
const NAMESPACE_WRAPPER: &str = "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var && exec \"$@\"";

/// One init: ours or a peer.
pub struct Contender {
    /// Short name for the tables.
    pub name: &'static str,
    pub path: PathBuf,
    /// Debian package that ships a peer; None for ours.
    pub package: Option<&'static str>,
    /// Arguments before the command, ending with `--`.
    pub flags: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

impl Contender {
    pub fn is_ours(&self) -> bool {
        self.package.is_none()
    }

    /// The command line as the report shows it, e.g. `tini-static -s -- CMD`.
    pub fn invocation(&self) -> String {
        let program = self
            .path
            .file_name()
            .map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        format!("{}{program} {} CMD", env.concat(), self.flags.join(" "))
    }

    /// `INIT FLAGS program...`, started directly (not PID 1), all output discarded.
    pub fn direct(&self, program: &[OsString]) -> Command {
        let mut command = Command::new(&self.path);
        command.args(self.flags).args(program).envs(self.env.iter().copied());
        quiet(&mut command);
        command
    }

    /// The same command line, but as PID 1 of fresh PID and mount namespaces.
    pub fn as_pid1(&self, program: &[OsString]) -> Command {
        let mut argv = vec![self.path.clone().into_os_string()];
        argv.extend(self.flags.iter().map(OsString::from));
        argv.extend(program.iter().cloned());
        let mut command = as_pid1(&argv);
        command.envs(self.env.iter().copied());
        command
    }
}

/// `argv` exec'd as PID 1 of fresh PID and mount namespaces (behind the tmpfs wrapper).
/// `--kill-child` makes the kernel kill the whole namespace if unshare dies, so killing unshare
/// is enough to clean up.
pub fn as_pid1(argv: &[OsString]) -> Command {
    unshare(&["--pid", "--fork", "--mount-proc", "--kill-child"], argv)
}

/// `argv` in a private mount namespace only (behind the tmpfs wrapper), so runs that are not
/// PID 1 can still not touch the host's /run and /var.
pub fn in_private_mounts(argv: &[OsString]) -> Command {
    unshare(&["--mount"], argv)
}

fn unshare(namespaces: &[&str], argv: &[OsString]) -> Command {
    let mut command = Command::new("unshare");
    command.args(namespaces).args(["sh", "-c", NAMESPACE_WRAPPER, "sh"]).args(argv);
    quiet(&mut command);
    command
}

/// `argv` run directly with no init, output discarded: the floor for startup timings.
pub fn no_init(argv: &[OsString]) -> Result<Command, String> {
    let (program, args) = argv.split_first().ok_or("no_init: empty command line")?;
    let mut command = Command::new(program);
    command.args(args);
    quiet(&mut command);
    Ok(command)
}

/// No stdin, output discarded (callers that want output pipe it again), and without the
/// LD_LIBRARY_PATH that `cargo run` adds: it would send the dynamic loader of dumb-init, the one
/// dynamic peer, through cargo's target and toolchain folders on every start.
fn quiet(command: &mut Command) {
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).env_remove("LD_LIBRARY_PATH");
}

/// Ours first, then the peers; fails naming the apt package when a peer is missing, because a
/// benchmark that silently skips a peer would publish an incomplete comparison.
pub fn all(ours: PathBuf) -> Result<Vec<Contender>, String> {
    let peers = [
        ("tini-static", "/usr/bin/tini-static", "tini", &["-s", "--"][..]),
        ("catatonit", "/usr/bin/catatonit", "catatonit", &["--"][..]),
        ("dumb-init", "/usr/bin/dumb-init", "dumb-init", &["--"][..]),
    ];
    let mut all =
        vec![Contender { name: "nix2gpu-init", path: ours, package: None, flags: &["--"], env: OUR_ENV }];
    for (name, path, package, flags) in peers {
        let path = Path::new(path);
        if !path.is_file() {
            return Err(format!("{} is missing: apt-get install -y {package}", path.display()));
        }
        all.push(Contender { name, path: path.to_path_buf(), package: Some(package), flags, env: &[] });
    }
    Ok(all)
}

/// A program and its arguments as owned OS strings, for `direct` and `as_pid1`.
pub fn argv<S: AsRef<OsStr>>(parts: &[S]) -> Vec<OsString> {
    parts.iter().map(|part| part.as_ref().to_os_string()).collect()
}

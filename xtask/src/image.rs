//! `cargo xtask image`: a container image without Nix or a registry. The root file system is
//! assembled from files on this machine (the static init, Debian's busybox-static and OpenSSH
//! with the shared libraries they need, a demo config) and built `FROM scratch` by the local
//! engine, which has nothing to pull.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{root, run, static_build};

/// The tag the image gets, and the tests run.
pub const TAG: &str = "nix2gpu-init:dev";

/// Programs copied from this machine, at the same paths, with the libraries `ldd` lists.
const PROGRAMS: [&str; 3] = ["/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/bin/ssh"];

/// The rest of glibc that every glibc base image has and none of [`PROGRAMS`] links to:
/// foreign programs need them, like the injected nvidia-smi and NVIDIA's libraries (which link
/// to all four) in the Docker GPU test.
const GLIBC_LIBRARIES: [&str; 4] = [
    "/lib/x86_64-linux-gnu/libm.so.6",
    "/lib/x86_64-linux-gnu/libdl.so.2",
    "/lib/x86_64-linux-gnu/libpthread.so.0",
    "/lib/x86_64-linux-gnu/librt.so.1",
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    sshd:x:100:65534:sshd privilege separation:/run/sshd:/bin/false\n\
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
/// Root has no password (`*`: no password matches, key logins work).
const SHADOW: &str = "root:*:20000:0:99999:7:::\nsshd:*:20000:0:99999:7:::\nnobody:*:20000:0:99999:7:::\n";
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n";

const DOCKERFILE: &str = r#"FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HEALTHCHECK --interval=1s --timeout=2s --retries=1 CMD ["/usr/bin/nix2gpu-init", "health"]
ENTRYPOINT ["/usr/bin/nix2gpu-init"]
"#;

/// Builds the image and prints its tag.
pub fn build() -> Result<(), String> {
    let binary = static_build::build()?;
    let context = root().join("target/image");
    let _ = fs::remove_dir_all(&context);
    let rootfs = context.join("rootfs");
    install(&binary, &rootfs.join("usr/bin/nix2gpu-init"))?;
    install_busybox(&rootfs)?;
    for program in PROGRAMS {
        install_with_libraries(Path::new(program), &rootfs)?;
    }
    for library in GLIBC_LIBRARIES {
        install(Path::new(library), &rootfs.join(library.trim_start_matches('/')))?;
    }
    write(&rootfs.join("etc/passwd"), PASSWD, 0o644)?;
    write(&rootfs.join("etc/group"), GROUP, 0o644)?;
    write(&rootfs.join("etc/shadow"), SHADOW, 0o600)?;
    write(&rootfs.join("etc/nsswitch.conf"), NSSWITCH, 0o644)?;
    let demo = fs::read_to_string(root().join("fixtures/image/config.yaml"))
        .map_err(|e| format!("cannot read fixtures/image/config.yaml: {e}"))?;
    write(&rootfs.join("etc/nix2gpu/config.yaml"), &demo, 0o644)?;
    for dir in ["root", "tmp", "run", "var/empty", "etc/ssh"] {
        fs::create_dir_all(rootfs.join(dir)).map_err(|e| format!("cannot create {dir}: {e}"))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))
        .map_err(|e| format!("cannot set /tmp's mode: {e}"))?;
    write(&context.join("Dockerfile"), DOCKERFILE, 0o644)?;
    // The classic builder: it builds FROM scratch without BuildKit, which may not be installed.
    run(Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--quiet", "--tag", TAG])
        .arg(&context))?;
    println!("{TAG}");
    Ok(())
}

/// busybox-static at /bin/busybox, with a link for each applet in /bin (sh, ls, httpd, ...).
fn install_busybox(rootfs: &Path) -> Result<(), String> {
    let busybox = Path::new("/bin/busybox");
    install(busybox, &rootfs.join("bin/busybox"))?;
    let output = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("cannot run /bin/busybox (apt-get install busybox-static): {e}"))?;
    for applet in String::from_utf8_lossy(&output.stdout).lines().filter(|a| *a != "busybox") {
        let link = rootfs.join("bin").join(applet);
        if !link.exists() {
            symlink("busybox", &link).map_err(|e| format!("cannot link {}: {e}", link.display()))?;
        }
    }
    Ok(())
}

/// `program` and every shared library (and the loader) it needs, each at its own path.
fn install_with_libraries(program: &Path, rootfs: &Path) -> Result<(), String> {
    let mut files = BTreeSet::from([program.to_path_buf()]);
    files.extend(libraries(program)?);
    for file in files {
        install(&file, &rootfs.join(file.strip_prefix("/").unwrap_or(&file)))?;
    }
    Ok(())
}

/// The absolute paths in `ldd`'s listing for `program`.
fn libraries(program: &Path) -> Result<Vec<PathBuf>, String> {
    let output = Command::new("ldd").arg(program).output().map_err(|e| {
        format!("cannot run ldd on {} (apt-get install openssh-server): {e}", program.display())
    })?;
    if !output.status.success() {
        return Err(format!("ldd {} failed: is it installed?", program.display()));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

/// Copies `from` to `to` (following links), creating the directories.
fn install(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))
}

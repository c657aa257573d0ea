//! The server's host keys: generated once (ed25519, and rsa for old clients), then kept, so a
//! container whose host key directory is on a volume keeps its identity across restarts and
//! clients do not see a changed-host-key warning.

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The key types generated, with the file names OpenSSH uses for them.
const HOST_KEYS: [(&str, &str); 2] = [("ed25519", "ssh_host_ed25519_key"), ("rsa", "ssh_host_rsa_key")];

/// The host keys in `dir`, generating the missing ones with `keygen` (`ssh-keygen`). A key that
/// cannot be had is left out, and why is in the second list.
pub fn ensure(dir: &Path, keygen: Option<&Path>) -> (Vec<PathBuf>, Vec<String>) {
    if let Err(e) = fs::create_dir_all(dir) {
        return (Vec::new(), vec![format!("cannot create {}: {e}", dir.display())]);
    }
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    for (kind, name) in HOST_KEYS {
        let key = dir.join(name);
        match ensure_key(&key, kind, keygen) {
            Ok(()) => keys.push(key),
            Err(problem) => problems.push(problem),
        }
    }
    (keys, problems)
}

fn ensure_key(key: &Path, kind: &str, keygen: Option<&Path>) -> Result<(), String> {
    match fs::metadata(key) {
        // An empty file is what an interrupted copy leaves; sshd cannot use it.
        Ok(meta) if meta.len() > 0 => return keep_private(key, meta.permissions().mode()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", key.display())),
    }
    let keygen = keygen.ok_or_else(|| format!("cannot generate {}: ssh-keygen not found", key.display()))?;
    generate(key, kind, keygen)
}

/// sshd ignores a private key others can read; a key copied onto a volume often is.
fn keep_private(key: &Path, mode: u32) -> Result<(), String> {
    if mode & 0o077 == 0 {
        return Ok(());
    }
    fs::set_permissions(key, Permissions::from_mode(0o600))
        .map_err(|e| format!("{} is readable by others and cannot be made private: {e}", key.display()))
}

/// Runs `ssh-keygen` into a temporary name, then renames the pair into place (the private key
/// last), so a key file that exists is always complete.
fn generate(key: &Path, kind: &str, keygen: &Path) -> Result<(), String> {
    let name = key.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = key.with_file_name(format!(".{name}.nix2gpu-new"));
    let public = |path: &Path| PathBuf::from(format!("{}.pub", path.display()));
    for stale in [&temporary, &public(&temporary)] {
        let _ = fs::remove_file(stale);
    }
    let output = Command::new(keygen)
        .args(["-q", "-N", "", "-t", kind, "-f"])
        .arg(&temporary)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", keygen.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{} -t {kind} failed ({}): {}", keygen.display(), output.status, stderr.trim()));
    }
    fs::rename(public(&temporary), public(key))
        .and_then(|()| fs::rename(&temporary, key))
        .map_err(|e| format!("cannot move the new {kind} host key into {}: {e}", key.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nix2gpu-hostkeys-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn missing_keys_are_generated_and_present_ones_kept() {
        let keygen = crate::access::find_program("ssh-keygen", std::env::var_os("PATH").as_deref())
            .expect("ssh-keygen (Debian's openssh-client) is installed");
        let dir = temp_dir("gen");
        let (keys, problems) = ensure(&dir, Some(&keygen));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(keys, [dir.join("ssh_host_ed25519_key"), dir.join("ssh_host_rsa_key")]);
        let first = fs::read(&keys[0]).unwrap();
        assert!(String::from_utf8_lossy(&first).contains("OPENSSH PRIVATE KEY"));
        assert!(fs::read_to_string(dir.join("ssh_host_rsa_key.pub")).unwrap().starts_with("ssh-rsa "));
        assert_eq!(fs::metadata(&keys[0]).unwrap().permissions().mode() & 0o777, 0o600);

        // Kept on the next start, even when ssh-keygen is gone; a too-open key is made private.
        fs::set_permissions(&keys[0], Permissions::from_mode(0o644)).unwrap();
        let (again, problems) = ensure(&dir, None);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(again, keys);
        assert_eq!(fs::read(&keys[0]).unwrap(), first);
        assert_eq!(fs::metadata(&keys[0]).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 4, "two pairs, no temporary files");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn without_ssh_keygen_a_missing_key_is_reported() {
        let dir = temp_dir("nokeygen");
        let (keys, problems) = ensure(&dir, None);
        assert!(keys.is_empty());
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("ssh_host_ed25519_key") && problems[0].contains("ssh-keygen not found"));
        fs::remove_dir_all(dir).unwrap();
    }
}

//! Secrets given in the environment (`ROOT_PASSWORD`, `TAILSCALE_AUTHKEY`) move into root-only
//! files before any node starts: the built-in that needs one reads the file, and no process
//! gets the variable (a service's environment is readable in /proc by its user, and inherited
//! by everything it runs).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::config::builtins::StashedSecret;

/// Writes each secret's value from `env` to its file (directory 0700, file 0600, replaced
/// atomically). A secret that cannot be written is reported by name, never by value.
pub fn stash(secrets: &[StashedSecret], env: &BTreeMap<OsString, OsString>) -> Vec<String> {
    secrets
        .iter()
        .filter_map(|secret| {
            let value = env.get(&OsString::from(&secret.var))?;
            write_private(&secret.file, value.as_encoded_bytes())
                .err()
                .map(|e| format!("cannot keep ${} in {}: {e}", secret.var, secret.file.display()))
        })
        .collect()
}

fn write_private(file: &Path, value: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let temporary = file.with_extension("new");
    let mut out = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    out.write_all(value)?;
    out.sync_all()?;
    fs::rename(&temporary, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn stashed_secrets_are_private_files_with_the_value() {
        let dir = std::env::temp_dir().join(format!("nix2gpu-secrets-{}", std::process::id()));
        let secret = StashedSecret { var: "ROOT_PASSWORD".into(), file: dir.join("secrets/root_password") };
        let env = BTreeMap::from([(OsString::from("ROOT_PASSWORD"), OsString::from("hunter2"))]);
        assert!(stash(std::slice::from_ref(&secret), &env).is_empty());
        assert_eq!(fs::read_to_string(&secret.file).unwrap(), "hunter2");
        assert_eq!(fs::metadata(&secret.file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(dir.join("secrets")).unwrap().mode() & 0o777, 0o700);
        // A second boot replaces the file.
        let env = BTreeMap::from([(OsString::from("ROOT_PASSWORD"), OsString::from("other"))]);
        assert!(stash(std::slice::from_ref(&secret), &env).is_empty());
        assert_eq!(fs::read_to_string(&secret.file).unwrap(), "other");
        fs::remove_dir_all(dir).unwrap();
    }
}

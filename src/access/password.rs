//! Root's password in /etc/shadow: a SHA-512 crypt hash (`$6$`, what `chpasswd` writes on
//! Debian and NixOS), or an empty field when `allow_empty_password` asks for nix2gpu's old
//! behaviour.
//!
//! The file is rewritten whole (see [`super::files::replace`]): root's entry changes, every
//! other line stays byte for byte, and the file keeps its owner and its 0640 or 0600 mode.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sha_crypt::{PasswordHasher, ShaCrypt};

use super::files::{self, Owner};

/// The password in `file`: its text without one trailing line end (a file written by `echo`
/// or a secret mount), which is not part of the password. `None` when nothing is left.
pub fn read(file: &Path) -> Result<Option<String>, String> {
    let text = fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let text = text.strip_suffix('\n').map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    Ok((!text.is_empty()).then(|| text.to_string()))
}

/// The SHA-512 crypt hash of `password`, with a fresh salt from /dev/urandom.
pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 12];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut salt))
        .map_err(|e| format!("cannot read /dev/urandom for a salt: {e}"))?;
    hash_with_salt(password, &salt)
}

/// 12 salt bytes are the 16 salt characters SHA-crypt uses at most.
fn hash_with_salt(password: &str, salt: &[u8; 12]) -> Result<String, String> {
    ShaCrypt::SHA512
        .hash_password_with_salt(password.as_bytes(), salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// What root's password field ends up as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootPassword {
    /// A crypt hash.
    Hash(String),
    /// No password at all (`allow_empty_password`).
    Empty,
    /// No password login, keys only: a password that is set stays, but a `!` lock or an empty
    /// field becomes `*`. Without PAM, OpenSSH refuses every login of an account whose field
    /// starts with `!`, keys too, and nix2gpu's images ship root that way; an empty field
    /// (nix2gpu's `passwd -d root`, or an earlier `allow_empty_password`) would let anyone
    /// `su` to root. `*` matches no password and locks nothing.
    KeysOnly,
}

impl RootPassword {
    /// For the log: what was done, never the hash.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Hash(_) => "set (SHA-512 crypt)",
            Self::Empty => "emptied (allow_empty_password)",
            Self::KeysOnly => "none usable (`*`: keys only)",
        }
    }
}

/// Sets root's password field in the shadow file at `path` (created, 0600, when missing).
/// Returns whether the file changed.
pub fn set_root(path: &Path, password: &RootPassword) -> Result<bool, String> {
    let (text, mode, owner) = match fs::metadata(path) {
        Ok(meta) => {
            let text =
                fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            // Readable by its group (Debian's `shadow`) or by root alone, nothing else.
            (text, 0o600 | (meta.mode() & 0o040), Some(Owner { uid: meta.uid(), gid: meta.gid() }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (String::new(), 0o600, None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let updated = with_root_password(&text, password, days_since_epoch());
    if updated == text {
        return Ok(false);
    }
    files::replace(path, updated.as_bytes(), mode, owner)
        .map(|()| true)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn days_since_epoch() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400)
}

/// `text` (shadow format) with root's password field set; a changed password also records
/// `today` as the day of the last change, as `chpasswd` does. A missing root entry is added.
fn with_root_password(text: &str, password: &RootPassword, today: u64) -> String {
    let mut found = false;
    let mut lines: Vec<String> = text
        .split_inclusive('\n')
        .map(|line| {
            let Some(entry) = line.strip_prefix("root:") else { return line.to_string() };
            found = true;
            let (body, end) = entry.strip_suffix('\n').map_or((entry, ""), |body| (body, "\n"));
            let mut fields: Vec<String> = body.split(':').map(str::to_string).collect();
            let current = fields[0].clone();
            match password {
                RootPassword::Hash(hash) => fields[0] = hash.clone(),
                RootPassword::Empty => fields[0] = String::new(),
                RootPassword::KeysOnly if current.is_empty() || current.starts_with('!') => {
                    fields[0] = "*".into()
                }
                RootPassword::KeysOnly => {}
            }
            if fields[0] != current && fields.len() > 1 && !matches!(password, RootPassword::KeysOnly) {
                fields[1] = today.to_string();
            }
            format!("root:{}{end}", fields.join(":"))
        })
        .collect();
    if !found {
        let field = match password {
            RootPassword::Hash(hash) => hash.as_str(),
            RootPassword::Empty => "",
            RootPassword::KeysOnly => return text.to_string(),
        };
        if !text.is_empty() && !text.ends_with('\n') {
            lines.push("\n".into());
        }
        lines.push(format!("root:{field}:{today}:0:99999:7:::\n"));
    }
    lines.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHADOW: &str = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nsshd:!:19000::::::\n";

    #[test]
    fn the_hash_is_glibc_s_sha512_crypt() {
        // The salt bytes become 16 salt characters; the hash is what OpenSSL's independent
        // implementation gives: `openssl passwd -6 -salt n34PoBLMgFrQVl4R hunter2`.
        let hashed = hash_with_salt("hunter2", b"saltsaltsalt").unwrap();
        let openssl = "$6$n34PoBLMgFrQVl4R$39BpmM2nPcx1OrJ4baGqw41vHXPOQBkOraK9yxHq8ES8LXqi8EfIWeNaqZVZyeqvU4TAeLbBTNbTUgYd7S27A1";
        // `rounds=5000` is the default spelled out, which glibc's crypt reads the same way.
        assert_eq!(hashed, openssl.replacen("$6$", "$6$rounds=5000$", 1));
        let a = hash("same").unwrap();
        let b = hash("same").unwrap();
        assert!(a.starts_with("$6$") && a != b, "fresh salts: {a} {b}");
    }

    #[test]
    fn only_root_s_entry_changes() {
        let hashed = with_root_password(SHADOW, &RootPassword::Hash("$6$s$h".into()), 20000);
        assert_eq!(hashed, SHADOW.replace("root:*:19000:", "root:$6$s$h:20000:"));
        let empty = with_root_password(SHADOW, &RootPassword::Empty, 20000);
        assert_eq!(empty, SHADOW.replace("root:*:19000:", "root::20000:"));
        assert_eq!(with_root_password(SHADOW, &RootPassword::KeysOnly, 20000), SHADOW, "root is not locked");
        let set = "root:$6$x$y:1:0:99999:7:::\n";
        assert_eq!(with_root_password(set, &RootPassword::KeysOnly, 20000), set, "a password stays");
        // An account whose name starts with root is not root.
        let lookalikes = "rootless:!:1::::::\nroot:!:19000:0:99999:7:::\n";
        assert_eq!(
            with_root_password(lookalikes, &RootPassword::KeysOnly, 20000),
            "rootless:!:1::::::\nroot:*:19000:0:99999:7:::\n",
            "a locked root is unlocked for keys, its last-change day kept"
        );
        let locked_hash = with_root_password("root:!$6$x$y:1:0:99999:7:::", &RootPassword::KeysOnly, 5);
        assert_eq!(locked_hash, "root:*:1:0:99999:7:::");
        assert_eq!(with_root_password("root::1::::::", &RootPassword::KeysOnly, 5), "root:*:1::::::");
    }

    #[test]
    fn a_missing_root_entry_is_added() {
        let added = with_root_password("daemon:*:1::::::", &RootPassword::Hash("$6$s$h".into()), 7);
        assert_eq!(added, "daemon:*:1::::::\nroot:$6$s$h:7:0:99999:7:::\n");
        assert_eq!(with_root_password("", &RootPassword::Empty, 7), "root::7:0:99999:7:::\n");
        assert_eq!(with_root_password("", &RootPassword::KeysOnly, 7), "");
    }

    #[test]
    fn the_shadow_file_keeps_its_mode_and_a_trailing_newline_is_not_the_password() {
        let dir = std::env::temp_dir().join(format!("nix2gpu-shadow-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let shadow = dir.join("shadow");
        for mode in [0o640, 0o600] {
            fs::write(&shadow, SHADOW).unwrap();
            fs::set_permissions(&shadow, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
            assert!(set_root(&shadow, &RootPassword::Hash("$6$a$b".into())).unwrap());
            assert!(fs::read_to_string(&shadow).unwrap().starts_with("root:$6$a$b:"));
            assert_eq!(fs::metadata(&shadow).unwrap().mode() & 0o7777, mode);
            assert!(!set_root(&shadow, &RootPassword::Hash("$6$a$b".into())).unwrap(), "nothing to change");
        }
        let missing = dir.join("absent");
        assert!(set_root(&missing, &RootPassword::Empty).unwrap());
        assert_eq!(fs::metadata(&missing).unwrap().mode() & 0o7777, 0o600);

        let file = dir.join("password");
        for (text, expected) in [
            ("pw\n", Some("pw")),
            ("pw\r\n", Some("pw")),
            ("pw", Some("pw")),
            (" pw \n\n", Some(" pw \n")),
            ("\n", None),
        ] {
            fs::write(&file, text).unwrap();
            assert_eq!(read(&file).unwrap().as_deref(), expected, "{text:?}");
        }
        assert!(read(&dir.join("nope")).unwrap_err().contains("nope"));
        fs::remove_dir_all(dir).unwrap();
    }
}

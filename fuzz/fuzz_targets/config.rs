//! Config loading, YAML and JSON (`config::parse` and `config::plan`, and `config::check`, which
//! `nix2gpu-init check` and a reload run): any text gives a configuration and a plan or a
//! non-empty list of errors, never a panic; `check` agrees with `parse` then `plan`; and every
//! error located in the file points at one of its lines.
//!
//! A NUL byte (which no config text holds) splits the input into two files, the second merged
//! over the first, as `--config a --config b` does. The files are scratch files, unlinked as
//! soon as they are open and read through /proc/self/fd; the environment and the account files
//! (fixtures/configs/etc) are fixed.

#![no_main]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nix2gpu_init::accounts::AccountFiles;
use nix2gpu_init::config::{self, ConfigError};

/// A public key, so that the sshd node's settings are planned with keys.
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPXlZ4JTyusciyfCFySh1v/NeY236hj/vsruki9yqyRe fuzz";

struct Fixed {
    env: BTreeMap<OsString, OsString>,
    accounts: AccountFiles,
    /// The two scratch files, with the paths they are read by.
    files: [(File, PathBuf); 2],
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let env = [
            ("HOME", "/root"),
            ("PATH", "/usr/bin:/bin"),
            ("NVIDIA_VISIBLE_DEVICES", "all"),
            ("SSH_PUBLIC_KEYS", KEY),
            ("ROOT_PASSWORD", "fuzz"),
            ("TAILSCALE_AUTHKEY", "tskey-auth-fuzz"),
        ];
        let etc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/configs/etc");
        Fixed {
            env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            accounts: AccountFiles { passwd: etc.join("passwd"), group: etc.join("group") },
            files: [scratch("a"), scratch("b")],
        }
    })
}

fn scratch(name: &str) -> (File, PathBuf) {
    let path = std::env::temp_dir().join(format!("nix2gpu-fuzz-config-{}-{name}", std::process::id()));
    let file =
        OpenOptions::new().read(true).write(true).create_new(true).open(&path).expect("a scratch file");
    fs::remove_file(&path).expect("the scratch file unlinked");
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    (file, by_fd)
}

fn write(file: &File, bytes: &[u8]) {
    file.set_len(0).expect("truncate the scratch file");
    file.write_all_at(bytes, 0).expect("write the scratch file");
}

fuzz_target!(|bytes: &[u8]| {
    let fixed = fixed();
    let parts: Vec<&[u8]> = bytes.splitn(2, |&byte| byte == 0).collect();
    let mut paths = Vec::new();
    for (part, (file, path)) in parts.iter().zip(&fixed.files) {
        write(file, part);
        paths.push(path.clone());
    }
    let checked = config::check(&paths, &fixed.env, &fixed.accounts);
    if let Err(errors) = &checked {
        assert!(!errors.is_empty(), "an error without errors");
        for (part, path) in parts.iter().zip(&paths) {
            located_inside(errors, path, part);
        }
    }
    // The one-document API on the first file: the same verdict as `check` when it is alone.
    let Ok(text) = std::str::from_utf8(parts[0]) else { return };
    let planned = match config::parse(&paths[0], text) {
        Ok(config) => config::plan(&config, &fixed.env, &fixed.accounts).map(drop),
        Err(errors) => Err(errors),
    };
    if let Err(errors) = &planned {
        assert!(!errors.is_empty(), "an error without errors");
        located_inside(errors, &paths[0], parts[0]);
    }
    if parts.len() == 1 {
        assert_eq!(
            planned.is_ok(),
            checked.is_ok(),
            "parse and plan: {planned:?}; check: {:?}",
            checked.err()
        );
    }
});

/// Every error in `path` with a place points at a line of the file (or just past its end).
/// Lines are counted generously: YAML also breaks lines at CR, NEL, LS and PS.
fn located_inside(errors: &[ConfigError], path: &Path, text: &[u8]) {
    let breaks = ['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'];
    let lines = 1 + String::from_utf8_lossy(text).chars().filter(|c| breaks.contains(c)).count();
    for error in errors.iter().filter(|error| error.file == path) {
        assert!(!error.message.is_empty(), "an error without a message: {error:?}");
        if let Some((line, column)) = error.location {
            assert!(line >= 1 && column >= 1 && line <= lines, "{error} is outside {lines} lines");
        }
    }
}

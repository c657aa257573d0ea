//! authorized_keys lines (`access::authorized_keys`): any text gives a verdict per line, never a
//! panic; every line is accounted for (kept, a duplicate, skipped, or blank/comment), and what
//! is kept passes the check on its own and is never part of a private key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nix2gpu_init::access::authorized_keys::{self, Source};

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let blank = text.lines().filter(|line| matches!(authorized_keys::check_line(line), Ok(None))).count();
    let total = text.lines().count();
    let merged = authorized_keys::merge(&[Source { name: "fuzz".into(), text }]);
    assert_eq!(merged.lines.len() + merged.duplicates + merged.skipped.len() + blank, total);
    for line in &merged.lines {
        assert!(matches!(authorized_keys::check_line(line), Ok(Some(_))), "kept but invalid: {line:?}");
        assert!(!line.contains("PRIVATE KEY"));
        assert_eq!(line.trim(), line, "kept lines are trimmed");
    }
});

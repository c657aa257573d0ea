//! /etc/passwd and /etc/group parsing (`accounts::parse_passwd`, `parse_group`): any text gives
//! the well-formed entries, never a panic, and each entry written back as a line parses to
//! itself (nothing of a field leaks into another).

#![no_main]

use libfuzzer_sys::fuzz_target;
use nix2gpu_init::accounts::{self, Account, Group};

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    for account in &accounts::parse_passwd(&text) {
        let Account { name, uid, gid, home, shell } = account;
        let line = format!("{name}:x:{uid}:{gid}::{home}:{shell}");
        assert_eq!(accounts::parse_passwd(&line), std::slice::from_ref(account), "{line:?}");
    }
    for group in &accounts::parse_group(&text) {
        let Group { name, gid, members } = group;
        assert!(members.iter().all(|member| !member.is_empty() && !member.contains(',')), "{group:?}");
        let line = format!("{name}:x:{gid}:{}", members.join(","));
        assert_eq!(accounts::parse_group(&line), std::slice::from_ref(group), "{line:?}");
    }
});

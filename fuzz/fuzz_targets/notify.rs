//! The sd_notify datagram parser (`notify::parse`): any bytes a process sends to the notify
//! socket give a list of notices, never a panic, and every `STATUS=` text is one short line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nix2gpu_init::graph::Notice;
use nix2gpu_init::notify::{self, MAX_STATUS_CHARS};

fuzz_target!(|datagram: &[u8]| {
    let notices = notify::parse(datagram);
    let lines = String::from_utf8_lossy(datagram).lines().count();
    assert!(notices.len() <= lines, "{} notices from {lines} lines", notices.len());
    for notice in notices {
        if let Notice::Status(text) = notice {
            assert!(text.chars().count() <= MAX_STATUS_CHARS, "status text too long: {text:?}");
            assert!(!text.chars().any(char::is_control), "control character in {text:?}");
        }
    }
});

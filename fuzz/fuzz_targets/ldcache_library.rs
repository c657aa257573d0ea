//! What the ld.so.cache builder reads from a library file (`gpu::ldcache::library::read`): any
//! file gives a library or `None` (ldconfig skips it), never a panic, and a library has one of
//! the flag values the loaders accept and a plausible name.
//!
//! The reader takes an open file (it reads with pread, never the whole file), so each input is
//! written to one scratch file, unlinked as soon as it is open.

#![no_main]

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nix2gpu_init::gpu::ldcache::library;

/// x86-64, x32, i386 without a libc, i386 for glibc.
const FLAGS: [i32; 4] = [0x0303, 0x0803, 0x0001, 0x0003];

fn scratch() -> &'static File {
    static FILE: OnceLock<File> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("nix2gpu-fuzz-library-{}", std::process::id()));
        let file =
            OpenOptions::new().read(true).write(true).create_new(true).open(&path).expect("a scratch file");
        fs::remove_file(&path).expect("the scratch file unlinked");
        file
    })
}

fuzz_target!(|bytes: &[u8]| {
    let file = scratch();
    file.set_len(0).expect("truncate the scratch file");
    file.write_all_at(bytes, 0).expect("write the scratch file");
    let Some(found) = library::read(file) else { return };
    assert!(FLAGS.contains(&found.flags), "flags {:#x}", found.flags);
    if let Some(soname) = &found.soname {
        assert!(!soname.contains(&0) && soname.len() <= 4096, "soname {soname:?}");
    }
});

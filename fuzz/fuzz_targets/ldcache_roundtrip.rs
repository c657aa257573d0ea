//! The ld.so.cache writer (`gpu::ldcache::encode`) against its reader: any entries and
//! generator are written (or refused when a name is empty or holds a NUL) and read back as
//! exactly those entries, in the loader's order, with that generator.

#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nix2gpu_init::gpu::ldcache::{self, Entry};

#[derive(Debug, Arbitrary)]
struct Input {
    entries: Vec<RawEntry>,
    generator: String,
}

#[derive(Debug, Arbitrary)]
struct RawEntry {
    soname: Vec<u8>,
    path: Vec<u8>,
    flags: i32,
    hwcap: u64,
}

fuzz_target!(|input: Input| {
    let entries: Vec<Entry> = input
        .entries
        .into_iter()
        .map(|raw| Entry {
            soname: OsString::from_vec(raw.soname),
            path: PathBuf::from(OsString::from_vec(raw.path)),
            flags: raw.flags,
            hwcap: raw.hwcap,
        })
        .collect();
    let storable = entries.iter().all(|entry| {
        let (soname, path) = (entry.soname.as_encoded_bytes(), entry.path.as_os_str().as_encoded_bytes());
        !soname.is_empty() && !soname.contains(&0) && !path.contains(&0)
    });
    let bytes = match ldcache::encode(&entries, &input.generator) {
        Ok(bytes) => bytes,
        Err(reason) => {
            assert!(!storable, "storable entries refused: {reason}");
            return;
        }
    };
    assert!(storable, "an entry with an empty name or a NUL was written");
    let mut sorted = entries;
    ldcache::sort(&mut sorted);
    let cache = ldcache::decode(&bytes).expect("a cache we wrote reads back");
    assert_eq!(cache.entries, sorted);
    assert_eq!(cache.generator.as_deref(), Some(input.generator.as_str()));
});

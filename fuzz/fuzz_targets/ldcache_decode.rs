//! The ld.so.cache reader (`gpu::ldcache::decode`): any bytes give a cache or an error, never a
//! panic; a cache that decodes and can be written again reads back the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nix2gpu_init::gpu::ldcache;

fuzz_target!(|bytes: &[u8]| {
    let Ok(cache) = ldcache::decode(bytes) else { return };
    let generator = cache.generator.clone().unwrap_or_default();
    // Entries with an empty name or a NUL cannot be written: encode refuses them.
    let Ok(again) = ldcache::encode(&cache.entries, &generator) else { return };
    let mut sorted = cache.entries;
    ldcache::sort(&mut sorted);
    let reread = ldcache::decode(&again).expect("a cache we wrote reads back");
    assert_eq!(reread.entries, sorted);
});

//! Unit tests: the format round trip and its refusal of malformed files, the order against an
//! independent transcription of glibc's comparison and lookup, the ELF reading on hand-built
//! objects, and ldconfig's naming rules on scratch directories. The comparison with the real
//! ldconfig and the real loader is in init-tests/tests/gpu_ldcache.rs.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::library::{self, FLAGS_X86_64, Library};
use super::order::libcmp;
use super::{Entry, decode, encode, scan, update};
use crate::testing::Scratch;

/// Knuth's MMIX LCG, so a failure reproduces from its seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize % n
    }

    /// A library-like name: letters, separators, short digit runs (with leading zeros, which
    /// glibc ignores; never long enough to overflow glibc's int) and the odd byte above 0x7f
    /// (a negative `char` in C).
    fn name(&mut self) -> Vec<u8> {
        const PIECES: [&[u8]; 14] = [
            b"lib",
            b"a",
            b"b",
            b"z",
            b".so",
            b".",
            b"-",
            b"_",
            b"1",
            b"01",
            b"9",
            b"10",
            b"535",
            b"\xc3\xa9",
        ];
        let mut name = Vec::new();
        for _ in 0..1 + self.below(6) {
            let piece = PIECES[self.below(PIECES.len())];
            if name.last().is_some_and(u8::is_ascii_digit) && piece[0].is_ascii_digit() {
                name.push(b'.');
            }
            name.extend_from_slice(piece);
        }
        name
    }
}

fn entry(soname: &[u8], path: &str, flags: i32) -> Entry {
    Entry { soname: OsString::from_vec(soname.to_vec()), path: PathBuf::from(path), flags, hwcap: 0 }
}

// --- glibc, transcribed independently (elf/dl-cache.c) ---

/// `_dl_cache_libcmp` as glibc writes it: a walk over two C strings of signed chars, digit runs
/// accumulated in an int and subtracted. Test names keep digit runs short, so no overflow.
fn glibc_libcmp(p1: &[u8], p2: &[u8]) -> i32 {
    let at = |s: &[u8], i: usize| s.get(i).map_or(0, |&b| i32::from(b as i8));
    let digit = |c: i32| (i32::from(b'0')..=i32::from(b'9')).contains(&c);
    let (mut i, mut j) = (0, 0);
    while at(p1, i) != 0 {
        if digit(at(p1, i)) {
            if !digit(at(p2, j)) {
                return 1;
            }
            let (mut val1, mut val2) = (0, 0);
            while digit(at(p1, i)) {
                val1 = val1 * 10 + at(p1, i) - i32::from(b'0');
                i += 1;
            }
            while digit(at(p2, j)) {
                val2 = val2 * 10 + at(p2, j) - i32::from(b'0');
                j += 1;
            }
            if val1 != val2 {
                return val1 - val2;
            }
        } else if digit(at(p2, j)) {
            return -1;
        } else if at(p1, i) != at(p2, j) {
            return at(p1, i) - at(p2, j);
        } else {
            i += 1;
            j += 1;
        }
    }
    at(p1, i) - at(p2, j)
}

/// The loader's `search_cache`: binary search over a cache sorted in descending order, back to
/// the first equal name, then the first entry of that name whose flags the x86-64 loader takes.
fn loader_lookup<'a>(entries: &'a [Entry], name: &[u8]) -> Option<&'a Entry> {
    let key = |index: usize| entries[index].soname.as_bytes();
    let (mut left, mut right) = (0_i64, entries.len() as i64 - 1);
    while left <= right {
        let middle = (left + right) / 2;
        let compared = glibc_libcmp(name, key(middle as usize));
        if compared == 0 {
            let mut first = middle as usize;
            while first > 0 && glibc_libcmp(name, key(first - 1)) == 0 {
                first -= 1;
            }
            return entries[first..]
                .iter()
                .take_while(|e| glibc_libcmp(name, e.soname.as_bytes()) == 0)
                .find(|e| e.flags == FLAGS_X86_64);
        }
        if compared < 0 {
            left = middle + 1;
        } else {
            right = middle - 1;
        }
    }
    None
}

// --- order ---

#[test]
fn libcmp_agrees_with_glibc_on_random_names() {
    let mut rng = Lcg(7);
    for _ in 0..20_000 {
        let (a, b) = (rng.name(), rng.name());
        assert_eq!(
            libcmp(&a, &b),
            glibc_libcmp(&a, &b).cmp(&0),
            "{} vs {}",
            a.escape_ascii(),
            b.escape_ascii()
        );
    }
}

#[test]
fn libcmp_compares_versions_numerically() {
    assert!(libcmp(b"libfoo.so.10", b"libfoo.so.9").is_gt());
    assert!(libcmp(b"libfoo.so.01", b"libfoo.so.1").is_eq());
    assert!(libcmp(b"libfoo.so.1", b"libfoo.so").is_gt());
    assert!(libcmp(b"libfoo.so", b"libfoo.so\xc3").is_gt(), "bytes above 0x7f are negative chars");
    assert!(libcmp(b"lib1", b"libz").is_gt(), "a digit sorts above a letter");
}

#[test]
fn encoded_order_is_the_order_the_loader_searches_and_finds_the_first_of_equals() {
    let mut rng = Lcg(42);
    let flags = [FLAGS_X86_64, 0x0003, 0x0803];
    for round in 0..200 {
        let entries: Vec<Entry> = (0..1 + rng.below(40))
            .map(|i| entry(&rng.name(), &format!("/dir{round}/{i}"), flags[rng.below(flags.len())]))
            .collect();
        let cache = decode(&encode(&entries, "test").unwrap()).unwrap();
        for pair in cache.entries.windows(2) {
            let compared = glibc_libcmp(pair[0].soname.as_bytes(), pair[1].soname.as_bytes());
            assert!(
                compared > 0 || (compared == 0 && pair[0].flags >= pair[1].flags),
                "out of order: {pair:?}"
            );
        }
        for wanted in &entries {
            let name = wanted.soname.as_bytes();
            let first = entries
                .iter()
                .find(|e| e.flags == FLAGS_X86_64 && glibc_libcmp(name, e.soname.as_bytes()) == 0);
            assert_eq!(loader_lookup(&cache.entries, name), first, "lookup of {}", name.escape_ascii());
        }
    }
}

// --- format ---

#[test]
fn round_trip_keeps_every_entry_and_the_generator() {
    let mut rng = Lcg(3);
    for _ in 0..100 {
        let mut entries: Vec<Entry> = (0..rng.below(30))
            .map(|i| {
                let name = rng.name();
                let dir = if rng.below(2) == 0 { "/usr/lib64" } else { "/opt/other" };
                let path = if rng.below(3) == 0 {
                    format!("{dir}/real-{i}")
                } else {
                    format!("{dir}/{}", String::from_utf8_lossy(&name))
                };
                Entry {
                    soname: OsString::from_vec(name),
                    path: path.into(),
                    flags: [FLAGS_X86_64, 1, 3][rng.below(3)],
                    hwcap: if rng.below(4) == 0 { 1 << 62 | rng.below(5) as u64 } else { 0 },
                }
            })
            .collect();
        let bytes = encode(&entries, "nix2gpu-init test").unwrap();
        let cache = decode(&bytes).unwrap();
        super::order::sort(&mut entries);
        assert_eq!(cache.entries, entries);
        assert_eq!(cache.generator.as_deref(), Some("nix2gpu-init test"));
        assert_eq!(&bytes[..20], b"glibc-ld.so.cache1.1");
        assert_eq!(bytes[28], 2, "little-endian flag");
    }
}

#[test]
fn entries_without_a_name_or_with_nul_are_refused() {
    assert!(encode(&[entry(b"", "/a/b", FLAGS_X86_64)], "g").is_err());
    assert!(encode(&[entry(b"lib\0x.so", "/a/b", FLAGS_X86_64)], "g").is_err());
    assert!(encode(&[], "g").is_ok(), "an empty cache is valid");
}

/// A valid little cache to break in the tests below.
fn sample() -> Vec<u8> {
    let entries =
        [entry(b"libfoo.so.1", "/usr/lib64/libfoo.so.1", FLAGS_X86_64), entry(b"libbar.so", "/x/y", 3)];
    encode(&entries, "sample").unwrap()
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn malformed_caches_are_refused() {
    let good = sample();
    let extension = u32::from_le_bytes(good[32..36].try_into().unwrap()) as usize;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("unknown magic", b"not a cache at all, not at all, no".to_vec()),
        ("truncated header", good[..30].to_vec()),
    ];
    let mut patch = |name, at: usize, value: u32| {
        let mut bytes = good.clone();
        put_u32(&mut bytes, at, value);
        cases.push((name, bytes));
    };
    patch("more entries than the file holds", 20, 1000);
    patch("entry count overflowing", 20, u32::MAX);
    patch("key outside the file", 48 + 4, 1 << 20);
    patch("value outside the file", 48 + 8, u32::MAX);
    patch("misaligned extension", 32, extension as u32 + 1);
    patch("extension outside the file", 32, 1 << 24);
    patch("extension magic", extension, 0x1234_5678);
    patch("extension count", extension + 4, u32::MAX);
    patch("section outside the file", extension + 16, u32::MAX);
    let mut big_endian = good.clone();
    big_endian[28] = 3;
    cases.push(("big-endian", big_endian));
    let mut invalid = good.clone();
    invalid[28] = 1;
    cases.push(("endianness marked invalid", invalid));
    let mut unterminated = good.clone();
    let last = unterminated.len() - 1;
    put_u32(&mut unterminated, 48 + 4, last as u32);
    cases.push(("string running to the end of the file", unterminated));
    let mut old = b"ld.so-1.7.0\0".to_vec();
    old.extend_from_slice(&0_u32.to_le_bytes());
    cases.push(("old format only", old));
    for (name, bytes) in cases {
        assert!(decode(&bytes).is_err(), "{name} was accepted");
    }
}

#[test]
fn any_truncation_or_byte_flip_gives_a_result_not_a_panic() {
    let good = sample();
    for len in 0..good.len() {
        let _ = decode(&good[..len]);
    }
    for at in 0..good.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut bytes = good.clone();
            bytes[at] ^= flip;
            let _ = decode(&bytes);
        }
    }
}

#[test]
fn the_new_format_inside_an_old_table_is_read() {
    let new = sample();
    let mut compat = b"ld.so-1.7.0\0".to_vec();
    compat.extend_from_slice(&0_u32.to_le_bytes());
    let base = compat.len();
    compat.extend_from_slice(&new);
    // String offsets count from the new header, the extension's from the start of the file.
    let extension = u32::from_le_bytes(new[32..36].try_into().unwrap());
    put_u32(&mut compat, base + 32, extension + base as u32);
    let section_offset = base + extension as usize + 16;
    let generator = u32::from_le_bytes(compat[section_offset..section_offset + 4].try_into().unwrap());
    put_u32(&mut compat, section_offset, generator + base as u32);
    assert_eq!(decode(&compat).unwrap(), decode(&new).unwrap());
}

// --- reading libraries ---

/// A minimal ELF shared object: one PT_LOAD at 0x1000 over the whole file (so that the string
/// table's address differs from its offset), PT_DYNAMIC, and PT_INTERP if asked.
struct Object {
    class64: bool,
    machine: u16,
    kind: u16,
    soname: Option<&'static str>,
    needed: &'static [&'static str],
    interpreter: Option<&'static str>,
    /// Zero bytes between the string table and the dynamic section.
    gap: usize,
}

const X86_64_LIBRARY: Object = Object {
    class64: true,
    machine: 62,
    kind: 3,
    soname: Some("libfoo.so.1"),
    needed: &[],
    interpreter: None,
    gap: 0,
};
const LOAD_ADDRESS: u64 = 0x1000;

impl Object {
    fn bytes(&self) -> Vec<u8> {
        let word = if self.class64 { 8 } else { 4 };
        let (header_len, phdr_len) = if self.class64 { (64, 56) } else { (52, 32) };
        let phnum = 2 + usize::from(self.interpreter.is_some());
        let mut strtab = vec![0_u8];
        let mut add = |s: &str| {
            let at = strtab.len() as u64;
            strtab.extend_from_slice(s.as_bytes());
            strtab.push(0);
            at
        };
        let mut dynamic: Vec<(u64, u64)> = self.needed.iter().map(|n| (1, add(n))).collect();
        if let Some(soname) = self.soname {
            dynamic.push((14, add(soname)));
        }
        let strtab_at = header_len + phnum * phdr_len;
        let dynamic_at = (strtab_at + strtab.len() + self.gap).next_multiple_of(8);
        dynamic.push((5, LOAD_ADDRESS + strtab_at as u64));
        dynamic.push((0, 0));
        let dynamic_len = dynamic.len() * 2 * word;
        let interp_at = dynamic_at + dynamic_len;
        let total = interp_at + self.interpreter.map_or(0, |i| i.len() + 1);

        let mut out = Vec::new();
        let put =
            |out: &mut Vec<u8>, value: u64, size: usize| out.extend_from_slice(&value.to_le_bytes()[..size]);
        out.extend_from_slice(b"\x7fELF");
        out.extend_from_slice(&[if self.class64 { 2 } else { 1 }, 1, 1]);
        out.resize(16, 0);
        put(&mut out, u64::from(self.kind), 2);
        put(&mut out, u64::from(self.machine), 2);
        put(&mut out, 1, 4);
        put(&mut out, 0, word);
        put(&mut out, header_len as u64, word);
        put(&mut out, 0, word);
        put(&mut out, 0, 4);
        for value in [header_len, phdr_len, phnum, 0, 0, 0] {
            put(&mut out, value as u64, 2);
        }
        let segment = |out: &mut Vec<u8>, kind: u32, offset: usize, len: usize, vaddr: u64| {
            let fields = [offset as u64, vaddr, vaddr, len as u64, len as u64];
            put(out, u64::from(kind), 4);
            if self.class64 {
                put(out, 4, 4);
                fields.iter().for_each(|&f| put(out, f, 8));
                put(out, 8, 8);
            } else {
                fields.iter().for_each(|&f| put(out, f, 4));
                put(out, 4, 4);
                put(out, 4, 4);
            }
        };
        segment(&mut out, 1, 0, total, LOAD_ADDRESS);
        segment(&mut out, 2, dynamic_at, dynamic_len, LOAD_ADDRESS + dynamic_at as u64);
        if let Some(interpreter) = self.interpreter {
            segment(&mut out, 3, interp_at, interpreter.len() + 1, LOAD_ADDRESS + interp_at as u64);
        }
        out.extend_from_slice(&strtab);
        out.resize(dynamic_at, 0);
        for (tag, value) in dynamic {
            put(&mut out, tag, word);
            put(&mut out, value, word);
        }
        if let Some(interpreter) = self.interpreter {
            out.extend_from_slice(interpreter.as_bytes());
            out.push(0);
        }
        assert_eq!(out.len(), total);
        out
    }
}

/// Where the DT_STRTAB entry of `X86_64_LIBRARY` is: its string table follows the ELF header
/// and two program headers.
fn strtab_entry(bytes: &[u8]) -> usize {
    let entry = [5_u64.to_le_bytes(), (LOAD_ADDRESS + 64 + 2 * 56).to_le_bytes()].concat();
    memchr::memmem::find(bytes, &entry).expect("the DT_STRTAB entry")
}

fn read_bytes(bytes: &[u8]) -> Option<Library> {
    let scratch = Scratch::new("read");
    let path = scratch.write("libx.so", bytes);
    read_file(&path)
}

fn read_file(path: &Path) -> Option<Library> {
    library::read(&fs::File::open(path).unwrap())
}

fn soname(value: &str) -> Option<Vec<u8>> {
    Some(value.as_bytes().to_vec())
}

#[test]
fn flags_and_soname_by_class_machine_and_glibc_markers() {
    let library = |object: Object| read_bytes(&object.bytes());
    assert_eq!(library(X86_64_LIBRARY), Some(Library { flags: 0x0303, soname: soname("libfoo.so.1") }));
    let x32 = Object { class64: false, ..X86_64_LIBRARY };
    assert_eq!(library(x32), Some(Library { flags: 0x0803, soname: soname("libfoo.so.1") }));
    let i386 = Object { class64: false, machine: 3, ..X86_64_LIBRARY };
    assert_eq!(library(i386), Some(Library { flags: 1, soname: soname("libfoo.so.1") }));
    let i386_libc =
        Object { class64: false, machine: 3, needed: &["libdl.so.2", "libc.so.6"], ..X86_64_LIBRARY };
    assert_eq!(library(i386_libc), Some(Library { flags: 3, soname: soname("libfoo.so.1") }));
    let i386_interp =
        Object { class64: false, machine: 3, interpreter: Some("/lib/ld-linux.so.2"), ..X86_64_LIBRARY };
    assert_eq!(library(i386_interp), Some(Library { flags: 3, soname: soname("libfoo.so.1") }));
    assert_eq!(
        library(Object { soname: None, ..X86_64_LIBRARY }),
        Some(Library { flags: 0x0303, soname: None })
    );
}

#[test]
fn files_ldconfig_skips_are_skipped() {
    assert_eq!(read_bytes(&Object { kind: 2, ..X86_64_LIBRARY }.bytes()), None, "an executable");
    assert_eq!(read_bytes(&Object { machine: 183, ..X86_64_LIBRARY }.bytes()), None, "AArch64");
    assert_eq!(read_bytes(&Object { machine: 3, ..X86_64_LIBRARY }.bytes()), None, "i386 in a 64-bit class");
    let mut big_endian = X86_64_LIBRARY.bytes();
    big_endian[5] = 2;
    assert_eq!(read_bytes(&big_endian), None);
    assert_eq!(read_bytes(b"/* GNU ld script */\nGROUP ( /lib/libc.so.6 )\n"), None);
    assert_eq!(read_bytes(&X86_64_LIBRARY.bytes()[..63]), None, "shorter than an ELF64 header");
    let mut no_strtab = X86_64_LIBRARY.bytes();
    let at = strtab_entry(&no_strtab);
    no_strtab[at] = 0x7f;
    assert_eq!(read_bytes(&no_strtab), None, "no DT_STRTAB");
}

#[test]
fn a_soname_outside_the_file_skips_it_and_no_truncation_panics() {
    let bytes = X86_64_LIBRARY.bytes();
    let at = strtab_entry(&bytes);
    let mut far = bytes.clone();
    far[at + 8..at + 16].copy_from_slice(&(LOAD_ADDRESS + (1 << 30)).to_le_bytes());
    assert_eq!(read_bytes(&far), None);
    let scratch = Scratch::new("truncated");
    for len in 0..bytes.len() {
        let path = scratch.write("libx.so", &bytes[..len]);
        let _ = read_file(&path);
    }
}

#[test]
fn tables_past_the_first_read_are_read_on_the_stack_or_the_heap() {
    let expected = Some(Library { flags: 0x0303, soname: soname("libfoo.so.1") });
    let far = Object { gap: 5000, ..X86_64_LIBRARY };
    assert_eq!(read_bytes(&far.bytes()), expected, "a dynamic section past the first 4 KiB");
    let needed: &'static [&'static str] = Box::leak(vec!["libdep.so.1"; 300].into_boxed_slice());
    let large = Object { needed, gap: 5000, ..X86_64_LIBRARY };
    assert_eq!(read_bytes(&large.bytes()), expected, "one larger than the buffer on the stack");
}

// --- scanning ---

/// `bytes` of an x86-64 library with this soname.
fn library_with(soname: &'static str) -> Vec<u8> {
    Object { soname: Some(soname), ..X86_64_LIBRARY }.bytes()
}

fn listing(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| format!("{} {:#x} {}", e.soname.to_string_lossy(), e.flags, e.path.display()))
        .collect()
}

#[test]
fn names_follow_ldconfigs_rules_for_files_and_links() {
    let lib = Scratch::new("rules");
    let d = lib.0.display();
    lib.write("libfoo.so.1.2.3", library_with("libfoo.so.1"));
    lib.link("libfoo.so.1", "libfoo.so.1.2.3");
    lib.link("libfoo.so", "libfoo.so.1");
    lib.link("libfoo-compat.so.7", "libfoo.so.1.2.3"); // neither its soname nor a .so link
    lib.link("libgone.so.1", "libgone.so.1.0"); // dangling
    lib.write("libnoname.so", Object { soname: None, ..X86_64_LIBRARY }.bytes());
    lib.write("libc.so", b"/* GNU ld script */\nGROUP ( libc.so.6 )\n");
    lib.write("libbar.so.2.0.#prelink#.a1b2c3", library_with("libbar.so.2"));
    lib.write("notalib.so.1", library_with("notalib.so.1"));
    lib.write("libbar.a", b"!<arch>\n");
    fs::create_dir(lib.0.join("libdir.so.1")).unwrap();
    lib.link("libdirlink.so.1", "libdir.so.1");
    nix::unistd::mkfifo(&lib.0.join("libfifo.so.1"), nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap();
    let entries = scan(std::slice::from_ref(&lib.0)).unwrap();
    assert_eq!(
        listing(&entries),
        [
            format!("libnoname.so 0x303 {d}/libnoname.so"),
            format!("libfoo.so.1 0x303 {d}/libfoo.so.1"),
            format!("libfoo.so 0x303 {d}/libfoo.so"),
        ]
    );
}

#[test]
fn without_a_soname_link_the_entry_names_the_file_and_the_newest_file_wins() {
    let lib = Scratch::new("nolink");
    let d = lib.0.display();
    lib.write("libfoo.so.1.2", library_with("libfoo.so.1"));
    lib.write("libfoo.so.1.10", library_with("libfoo.so.1"));
    lib.write("libfoo.so.1.9", library_with("libfoo.so.1"));
    let entries = scan(std::slice::from_ref(&lib.0)).unwrap();
    assert_eq!(listing(&entries), [format!("libfoo.so.1 0x303 {d}/libfoo.so.1.10")]);
    lib.link("libfoo.so.1", "libfoo.so.1.2");
    let entries = scan(std::slice::from_ref(&lib.0)).unwrap();
    assert_eq!(listing(&entries), [format!("libfoo.so.1 0x303 {d}/libfoo.so.1")]);
}

#[test]
fn directories_count_once_in_order_and_must_be_absolute_and_readable() {
    let (first, second) = (Scratch::new("first"), Scratch::new("second"));
    first.write("libfoo.so.1", library_with("libfoo.so.1"));
    second.write("libfoo.so.1", library_with("libfoo.so.1"));
    second.link("alias", second.0.to_str().unwrap());
    let with_slashes = PathBuf::from(format!("{}//", first.0.display()));
    let entries = scan(&[with_slashes, second.0.join("alias"), second.0.clone(), first.0.clone()]).unwrap();
    assert_eq!(
        listing(&entries),
        [
            format!("libfoo.so.1 0x303 {}/libfoo.so.1", first.0.display()),
            format!("libfoo.so.1 0x303 {}/alias/libfoo.so.1", second.0.display()),
        ],
        "the first directory's entry comes first, so the loader picks it"
    );
    assert!(scan(&[PathBuf::from("relative/dir")]).unwrap_err().contains("absolute"));
    assert!(scan(&[first.0.join("missing")]).unwrap_err().contains("missing"));
    assert!(scan(&[first.0.join("libfoo.so.1")]).unwrap_err().contains("not a directory"));
}

#[test]
fn a_directory_large_enough_for_several_threads_follows_the_same_rules() {
    let lib = Scratch::new("many");
    let d = lib.0.display();
    let template = library_with("libmany-000000.so.1");
    let digits = memchr::memmem::find(&template, b"000000").expect("the template's soname");
    let mut expected = Vec::new();
    for index in 0..300 {
        let number = format!("{index:06}");
        let mut bytes = template.clone();
        bytes[digits..digits + 6].copy_from_slice(number.as_bytes());
        let (file, soname) = (format!("libmany-{number}.so.1.0"), format!("libmany-{number}.so.1"));
        lib.write(&file, bytes);
        lib.link(&soname, &file);
        expected.push(entry(soname.as_bytes(), &format!("{d}/{soname}"), FLAGS_X86_64));
        if index % 3 == 0 {
            let linker = format!("libmany-{number}.so");
            lib.link(&linker, &soname);
            expected.push(entry(linker.as_bytes(), &format!("{d}/{linker}"), FLAGS_X86_64));
        }
        if index % 5 == 0 {
            lib.link(&format!("libmany-alias-{number}.so.2"), &file);
        }
        if index % 7 == 0 {
            lib.link(&format!("libgone-{number}.so.1"), &format!("libgone-{number}.so.1.0"));
        }
        if index % 11 == 0 {
            lib.write(&format!("libscript-{number}.so"), b"/* GNU ld script */\n");
        }
    }
    super::sort(&mut expected);
    let entries = scan(std::slice::from_ref(&lib.0)).unwrap();
    assert_eq!(listing(&entries), listing(&expected));
}

// --- reading on several threads ---

#[test]
fn items_are_read_on_helpers_while_still_being_found_and_each_once() {
    let helpers_expected = std::thread::available_parallelism().is_ok_and(|cpus| cpus.get() > 1);
    let (read_one, first_read) = std::sync::mpsc::channel();
    let (found_all, mut reads) = super::prefetch::while_finding(
        |found| {
            for item in 0..1000 {
                found(item);
                if item == 500 && helpers_expected {
                    // This thread reads only once finding is over: a read now is a helper's.
                    let waited = first_read.recv_timeout(std::time::Duration::from_secs(10));
                    waited.expect("a helper reads while items are still being found");
                }
            }
            "found all"
        },
        |item| {
            let _ = read_one.send(());
            item * 2
        },
    );
    assert_eq!(found_all, "found all");
    reads.sort_unstable();
    assert_eq!(reads, (0..1000).map(|item| item * 2).collect::<Vec<_>>());
}

#[test]
fn a_few_items_are_read_on_the_finding_thread() {
    let here = std::thread::current().id();
    let ((), reads) = super::prefetch::while_finding(
        |found| (0..10).for_each(&mut *found),
        |item| (item, std::thread::current().id()),
    );
    let mut items: Vec<usize> = reads.iter().map(|&(item, _)| item).collect();
    items.sort_unstable();
    assert_eq!(items, (0..10).collect::<Vec<_>>());
    assert!(reads.iter().all(|&(_, thread)| thread == here), "ten items do not repay a thread");
}

// --- writing ---

#[test]
fn update_writes_a_readable_cache_atomically() {
    let lib = Scratch::new("update-lib");
    let out = Scratch::new("update-out");
    lib.write("libfoo.so.1", library_with("libfoo.so.1"));
    let cache = out.write("ld.so.cache", b"previous contents");
    assert_eq!(update(&cache, std::slice::from_ref(&lib.0)).unwrap(), 1);
    let written = decode(&fs::read(&cache).unwrap()).unwrap();
    assert_eq!(written.entries, scan(std::slice::from_ref(&lib.0)).unwrap());
    assert_eq!(written.generator, Some(super::generator()));
    assert_eq!(fs::metadata(&cache).unwrap().permissions().mode() & 0o7777, 0o644);
    let names: Vec<_> = fs::read_dir(&out.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["ld.so.cache"], "no temporary file is left behind");
    let unwritable = Path::new("/proc/nix2gpu-no-such-dir/ld.so.cache");
    assert!(update(unwritable, std::slice::from_ref(&lib.0)).unwrap_err().contains("cannot write"));
}

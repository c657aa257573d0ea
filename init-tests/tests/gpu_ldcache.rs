//! `nix2gpu-init ldcache` against glibc: for the same directories, `ldconfig -p` lists our
//! cache line for line as it lists the cache glibc's own ldconfig builds, and the real loader
//! finds libraries through it.
//!
//! ldconfig always adds the system library directories, so glibc's cache is built in a private
//! mount namespace whose /usr/lib (and /lib, where it is not a link to it) is an empty tmpfs,
//! as is /var/cache (ldconfig writes its aux cache there). Both tools are static and run in
//! that same namespace, so they see the same files; the machine is never touched.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use init_tests::{fixture, init_binary};

/// Bound on each helper command (gcc, ldconfig, the loader run).
const COMMAND_LIMIT_SECONDS: &str = "120";

/// Where ldconfig lives on Debian, merged /usr or not.
const LDCONFIG: &str = "/sbin/ldconfig";

/// Hides the system library directories and /var/cache, then builds glibc's cache ($1) and
/// ours ($2, with the init binary $3) for the directories that follow.
const BOTH_CACHES: &str = r#"
theirs=$1 ours=$2 init=$3; shift 3
mount -t tmpfs tmpfs /var/cache && mount -t tmpfs tmpfs /usr/lib || exit 90
[ -L /lib ] || mount -t tmpfs tmpfs /lib || exit 90
/sbin/ldconfig -C "$theirs" -f /dev/null -X "$@" || exit 91
exec "$init" ldcache --output "$ours" "$@"
"#;

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let unique = COUNT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("nix2gpu-ldcache-{name}-{}-{unique}", std::process::id()));
        fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs a command under coreutils' `timeout`, so that no test can hang on it, and without the
/// LD_LIBRARY_PATH that `cargo test` sets (it would find libraries before the cache does).
fn bounded(program: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .env_remove("LD_LIBRARY_PATH")
        .arg(COMMAND_LIMIT_SECONDS)
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn succeeded(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn text(path: &Path) -> &str {
    path.to_str().expect("scratch paths are UTF-8")
}

/// A shared library built from fixtures/ldcache/answer.c. `target` is gcc's flags for the
/// ABI; `extra` are more flags or objects (e.g. a library to need).
fn build_library(path: &Path, soname: Option<&str>, target: &[&str], extra: &[&str]) {
    let source = fixture("ldcache/answer.c");
    let soname_flag = soname.map(|name| format!("-Wl,-soname,{name}"));
    let mut args = vec!["-shared", "-fPIC", "-o", text(path), &source];
    args.extend(target);
    args.extend(soname_flag.as_deref());
    args.extend(extra);
    succeeded(bounded("gcc", &args), &format!("gcc {args:?}"));
}

const X86_64: &[&str] = &[];
/// i386 and x32 without a C library: only the compiler and binutils are needed.
const I386: &[&str] = &["-m32", "-nostdlib"];
const X32: &[&str] = &["-mx32", "-nostdlib"];

/// `ldconfig -p -C FILE`, with the file's name in the count line replaced by CACHE.
fn listing(cache: &Path) -> Vec<String> {
    let printed = succeeded(bounded(LDCONFIG, &["-p", "-C", text(cache)]), "ldconfig -p");
    printed.lines().map(|line| line.replace(&format!("`{}'", text(cache)), "`CACHE'")).collect()
}

/// Builds both caches for `dirs` and returns their listings (glibc's, ours) without the
/// generator lines, after checking that ours names nix2gpu-init as its writer.
fn both_listings(scratch: &Scratch, dirs: &[&Path]) -> (Vec<String>, Vec<String>) {
    let (theirs, ours) = (scratch.path("glibc.cache"), scratch.path("ours.cache"));
    let init = init_binary();
    let mut args = vec!["--mount", "--propagation", "private", "sh", "-c", BOTH_CACHES, "sh"];
    args.extend([text(&theirs), text(&ours), text(&init)]);
    args.extend(dirs.iter().map(|dir| text(dir)));
    let output = bounded("unshare", &args);
    succeeded(output, "building both caches in a private mount namespace (needs root and a static ldconfig)");
    let split = |mut lines: Vec<String>| {
        let generator = lines.pop().unwrap_or_default();
        assert!(generator.starts_with("Cache generated by: "), "no generator line: {lines:?}");
        (lines, generator)
    };
    let (glibc, _) = split(listing(&theirs));
    let (ours, generator) = split(listing(&ours));
    assert!(generator.contains("nix2gpu-init"), "{generator}");
    (glibc, ours)
}

fn assert_same(glibc: &[String], ours: &[String]) {
    assert_eq!(ours, glibc, "\nours:\n{}\nglibc's:\n{}", ours.join("\n"), glibc.join("\n"));
}

/// The directory holding the system's libc, where the real libraries are copied from.
fn system_library_dir() -> &'static Path {
    ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64"]
        .into_iter()
        .map(Path::new)
        .find(|dir| dir.join("libc.so.6").exists())
        .expect("a directory with libc.so.6")
}

/// Files and links from `source` whose names start with one of `prefixes`, copied into
/// `dir`; absolute links to a copied file are made relative, so they stay inside `dir`.
/// Returns the names copied.
fn copy_libraries(source: &Path, prefixes: &[&str], dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(source)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| prefixes.iter().any(|prefix| name.starts_with(prefix)))
        .collect();
    names.sort();
    for name in &names {
        let from = source.join(name);
        let metadata = fs::symlink_metadata(&from).unwrap();
        if metadata.file_type().is_symlink() {
            let target = fs::read_link(&from).unwrap();
            let local = target
                .file_name()
                .filter(|base| target.is_absolute() && names.iter().any(|n| n.as_str() == *base));
            symlink(local.map(PathBuf::from).unwrap_or(target), dir.join(name)).unwrap();
        } else if metadata.is_file() {
            fs::copy(&from, dir.join(name)).unwrap();
        }
    }
    names
}

/// The directories of Debian's NVIDIA userspace under target/nvidia/root (from `cargo xtask
/// fetch-nvidia`, or `apt-get download` and `dpkg -x`), if it is there.
fn nvidia_library_dirs() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        let mut holds_libraries = false;
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, found);
            } else if entry.file_name().to_string_lossy().starts_with("libnvidia-ml.so") {
                holds_libraries = true;
            }
        }
        if holds_libraries {
            found.push(dir.to_path_buf());
        }
    }
    let mut found = Vec::new();
    walk(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/nvidia/root"), &mut found);
    found
}

#[test]
fn real_libraries_are_listed_exactly_as_ldconfig_lists_them() {
    let scratch = Scratch::new("real");
    let dir = scratch.dir("lib");
    let prefixes = [
        "libc.so",
        "libm.so",
        "libz.so",
        "libpthread.so",
        "libdl.so",
        "librt.so",
        "libcrypt.so",
        "libselinux.so",
        "libpcre2-8.so",
        "libzstd.so",
        "liblzma.so",
        "libbz2.so",
        "libcap.so",
        "libacl.so",
        "libattr.so",
        "libexpat.so",
        "libffi.so",
        "libgcc_s.so",
        "libstdc++.so",
        "libuuid.so",
        "libblkid.so",
        "libmount.so",
        "libtinfo.so",
        "libssl.so",
        "libcrypto.so",
        "ld-linux-x86-64.so",
    ];
    let mut copied = copy_libraries(system_library_dir(), &prefixes, &dir);
    let nvidia = nvidia_library_dirs();
    for source in &nvidia {
        copied.extend(copy_libraries(source, &["libnvidia-ml.so", "libcuda.so"], &dir));
    }
    eprintln!(
        "copied {} files and links (NVIDIA userspace: {}): {copied:?}",
        copied.len(),
        !nvidia.is_empty()
    );
    let (glibc, ours) = both_listings(&scratch, &[&dir]);
    assert!(glibc.len() > 12, "too few libraries to compare: {glibc:?}");
    if !nvidia.is_empty() {
        assert!(ours.iter().any(|line| line.contains("libnvidia-ml.so.1 (libc6,x86-64) => ")), "{ours:?}");
        assert!(ours.iter().any(|line| line.contains("libcuda.so.1 (libc6,x86-64) => ")), "{ours:?}");
    }
    assert_same(&glibc, &ours);
}

#[test]
fn every_kind_of_file_is_named_as_ldconfig_names_it() {
    let scratch = Scratch::new("kinds");
    let (a, b, build) = (scratch.dir("a"), scratch.dir("b"), scratch.dir("build"));
    let lib = |name: &str| a.join(name);
    let link = |name: &str, target: &str| symlink(target, lib(name)).unwrap();
    // The usual triple: real file, soname link, linker link.
    build_library(&lib("libalpha.so.1.2.3"), Some("libalpha.so.1"), X86_64, &[]);
    link("libalpha.so.1", "libalpha.so.1.2.3");
    link("libalpha.so", "libalpha.so.1");
    // Versions compare numerically; leading zeros make different names that compare equal.
    build_library(&lib("libnum.so.9"), Some("libnum.so.9"), X86_64, &[]);
    build_library(&lib("libnum.so.10"), Some("libnum.so.10"), X86_64, &[]);
    build_library(&lib("libeq.so.01"), Some("libeq.so.01"), X86_64, &[]);
    build_library(&lib("libeq.so.1"), Some("libeq.so.1"), X86_64, &[]);
    // No soname: the file name stands in.
    build_library(&lib("libnosoname.so"), None, X86_64, &[]);
    // i386 (plain ELF, and glibc's through DT_NEEDED libc.so.6) and x32.
    let fake_libc = build.join("libc.so.6");
    build_library(&fake_libc, Some("libc.so.6"), I386, &[]);
    build_library(&lib("lib32plain.so.1"), Some("lib32plain.so.1"), I386, &[]);
    build_library(
        &lib("lib32glibc.so.1"),
        Some("lib32glibc.so.1"),
        I386,
        &["-Wl,--no-as-needed", text(&fake_libc)],
    );
    build_library(&lib("libx32only.so.3"), Some("libx32only.so.3"), X32, &[]);
    // Two files of one soname, and a link under an unrelated name.
    build_library(&lib("libdup.so.1.0"), Some("libdup.so.1"), X86_64, &[]);
    build_library(&lib("libdup.so.1.1"), Some("libdup.so.1"), X86_64, &[]);
    link("libdup.so.1", "libdup.so.1.0");
    link("libalias.so.5", "libalpha.so.1.2.3");
    // The dynamic linker's name patterns.
    build_library(&lib("ld-n2gtest.so.1"), Some("ld-n2gtest.so.1"), X86_64, &[]);
    // Everything ldconfig skips.
    fs::write(lib("libscript.so"), "/* GNU ld script */\nGROUP ( libalpha.so.1 )\n").unwrap();
    link("libdangling.so.1", "libmissing.so.1.0");
    build_library(&lib("notalib.so.1"), Some("notalib.so.1"), X86_64, &[]);
    fs::copy(lib("libalpha.so.1.2.3"), lib("libalpha.so.1.2.3.#prelink#.a1b2c3")).unwrap();
    fs::create_dir(lib("libsubdir.so.1")).unwrap();
    link("libtodir.so.1", "libsubdir.so.1");
    nix::unistd::mkfifo(&lib("libfifo.so.1"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // A second directory sharing a soname with the first: its entry comes second.
    build_library(&b.join("libalpha.so.1"), Some("libalpha.so.1"), X86_64, &[]);
    build_library(&b.join("libbonly.so.2"), Some("libbonly.so.2"), X86_64, &[]);

    let (glibc, ours) = both_listings(&scratch, &[&a, &b]);
    assert_same(&glibc, &ours);
    for expected in
        ["lib32plain.so.1 (ELF)", "lib32glibc.so.1 (libc6)", "libx32only.so.3 (libc6,x32)", "libeq.so.01"]
    {
        assert!(ours.iter().any(|line| line.contains(expected)), "no {expected}: {ours:?}");
    }
}

#[test]
fn a_directory_read_on_several_threads_is_listed_as_ldconfig_lists_it() {
    let scratch = Scratch::new("many");
    let (dir, build) = (scratch.dir("lib"), scratch.dir("build"));
    // One gcc-built library; each copy gets its own soname in place of the digits.
    let template_path = build.join("libmany.so");
    build_library(&template_path, Some("libmany-000000.so.1"), X86_64, &[]);
    let template = fs::read(&template_path).unwrap();
    let digits: Vec<usize> =
        template.windows(6).enumerate().filter(|(_, w)| w == b"000000").map(|(at, _)| at).collect();
    assert_eq!(digits.len(), 1, "the soname's digits occur once in the template");
    let link = |name: &str, target: &str| symlink(target, dir.join(name)).unwrap();
    for index in 0..400 {
        let number = format!("{index:06}");
        let mut library = template.clone();
        library[digits[0]..digits[0] + 6].copy_from_slice(number.as_bytes());
        let file = format!("libmany-{number}.so.1.0");
        fs::write(dir.join(&file), library).unwrap();
        link(&format!("libmany-{number}.so.1"), &file);
        if index % 3 == 0 {
            link(&format!("libmany-{number}.so"), &format!("libmany-{number}.so.1"));
        }
        if index % 5 == 0 {
            link(&format!("libmany-alias-{number}.so.2"), &file);
        }
        if index % 7 == 0 {
            link(&format!("libgone-{number}.so.1"), &format!("libgone-{number}.so.1.0"));
        }
    }
    let (glibc, ours) = both_listings(&scratch, &[&dir]);
    assert!(glibc.len() > 500, "too few entries: {}", glibc.len());
    assert_same(&glibc, &ours);
}

#[test]
fn where_no_soname_link_exists_the_entry_names_the_file_unlike_ldconfig_x() {
    let scratch = Scratch::new("nolink");
    let dir = scratch.dir("lib");
    build_library(&dir.join("libkept.so.1"), Some("libkept.so.1"), X86_64, &[]);
    build_library(&dir.join("libnolink.so.2.0.1"), Some("libnolink.so.2"), X86_64, &[]);
    let (glibc, ours) = both_listings(&scratch, &[&dir]);
    let d = text(&dir);
    let differing: Vec<_> = glibc.iter().zip(&ours).filter(|(theirs, ours)| theirs != ours).collect();
    assert_eq!(
        differing,
        [(
            &format!("\tlibnolink.so.2 (libc6,x86-64) => {d}/libnolink.so.2"),
            &format!("\tlibnolink.so.2 (libc6,x86-64) => {d}/libnolink.so.2.0.1")
        )],
        "glibc's -X cache points at a soname link that does not exist; ours at the file"
    );
    assert_eq!(glibc.len(), ours.len());
}

#[test]
fn the_loader_finds_libraries_through_our_cache_only() {
    let scratch = Scratch::new("loader");
    let lib = scratch.dir("lib");
    let first = lib.join("libn2gtest.so.1");
    build_library(&first, Some("libn2gtest.so.1"), X86_64, &[]);
    // No libn2gtestb.so.2 link: the cache must lead the loader to the file itself.
    let other = lib.join("libn2gtestb.so.2.0.1");
    let source = fixture("ldcache/other.c");
    let args = ["-shared", "-fPIC", "-Wl,-soname,libn2gtestb.so.2", "-o", text(&other), &source];
    succeeded(bounded("gcc", &args), "gcc other.c");
    let program = scratch.path("main");
    let main = fixture("ldcache/main.c");
    let args = ["-o", text(&program), &main, text(&first), text(&other)];
    succeeded(bounded("gcc", &args), "gcc main.c");

    let alone = bounded(text(&program), &[]);
    assert_eq!(alone.status.code(), Some(127), "without the cache the program must not find its libraries");
    assert!(String::from_utf8_lossy(&alone.stderr).contains("libn2gtest"), "{alone:?}");

    let cache = scratch.path("ld.so.cache");
    let init = init_binary();
    let written = bounded(text(&init), &["ldcache", "--output", text(&cache), text(&lib)]);
    assert_eq!(succeeded(written, "nix2gpu-init ldcache"), format!("{}: 2 libraries\n", text(&cache)));
    let script = r#"mount --bind "$1" /etc/ld.so.cache && LD_DEBUG=libs exec "$2""#;
    let args =
        ["--mount", "--propagation", "private", "sh", "-c", script, "sh", text(&cache), text(&program)];
    let run = bounded("unshare", &args);
    let stdout = succeeded(run.clone(), "the program with our cache over /etc/ld.so.cache");
    assert_eq!(stdout, "n2gtest: 42 7\n");
    let debug: Vec<String> = String::from_utf8_lossy(&run.stderr)
        .lines()
        .map(|line| line.split_once(':').map_or(line, |(_pid, rest)| rest).trim().to_string())
        .collect();
    for (name, file) in [("libn2gtest.so.1", "libn2gtest.so.1"), ("libn2gtestb.so.2", "libn2gtestb.so.2.0.1")]
    {
        let find =
            debug.iter().position(|l| l.starts_with(&format!("find library={name} "))).unwrap_or_else(|| {
                panic!("the loader never looked for {name}:\n{}", debug.join("\n"));
            });
        assert_eq!(
            debug[find + 1..find + 3],
            ["search cache=/etc/ld.so.cache".to_string(), format!("trying file={}/{file}", text(&lib))],
            "{name} must be found through the cache:\n{}",
            debug.join("\n")
        );
    }
}

#[test]
fn errors_exit_1_with_the_reason() {
    let scratch = Scratch::new("errors");
    let init = init_binary();
    let cache = scratch.path("c");
    let cases: [(&[&str], &str); 4] = [
        (&["ldcache", "--output", text(&cache), "relative/dir"], "absolute"),
        (&["ldcache", "--output", text(&cache), "/nonexistent-nix2gpu-dir"], "/nonexistent-nix2gpu-dir"),
        (&["ldcache", "--output", "/proc/no-such-dir/ld.so.cache", text(&scratch.0)], "cannot write"),
        (&["ldcache", "--output", text(&cache)], "at least one"),
    ];
    for (args, reason) in cases {
        let output = bounded(text(&init), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let code = if args.len() == 3 { 64 } else { 1 };
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(!cache.exists(), "{args:?} wrote a cache");
    }
}

//! `set-interpreter` and `print-interpreter` of the real static binary on real programs:
//! NVIDIA's nvidia-smi (non-PIE ET_EXEC, from Debian's packages), a copy of /usr/bin/ls (PIE)
//! and a gcc-built non-PIE program. Each rewritten program must run, binutils' readelf must
//! read back the same interpreter, and bad inputs must be refused and left as they were.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use init_tests::{fixture, in_private_dev, init_binary, nvidia_root};

const SYSTEM_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
/// Debian's places for the unpacked packages' files.
const NVIDIA_SMI: &str = "usr/lib/nvidia/current/nvidia-smi";
const NVIDIA_LIBRARIES: &str = "usr/lib/x86_64-linux-gnu/nvidia/current";
/// nvidia-smi's exit codes without a GPU: NVML's LIBRARY_NOT_FOUND and DRIVER_NOT_LOADED.
const NO_LIBRARY: i32 = 12;
const NO_DRIVER: i32 = 9;

/// A scratch directory with a long and a short loader path (symlinks to the real loader).
struct Scratch {
    dir: PathBuf,
    long: String,
    short: String,
}

impl Scratch {
    fn new() -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("n2g-{}-{n}", std::process::id()));
        let deep =
            dir.join(format!("nix/store/{}-glibc-2.40-66/lib", "0123456789abcdfghijklmnpqrsvwxyz".repeat(2)));
        fs::create_dir_all(&deep).unwrap();
        let long = deep.join("ld-linux-x86-64.so.2");
        let short = dir.join("ld");
        std::os::unix::fs::symlink(SYSTEM_LOADER, &long).unwrap();
        std::os::unix::fs::symlink(SYSTEM_LOADER, &short).unwrap();
        let (long, short) = (long.display().to_string(), short.display().to_string());
        assert!(long.len() > 100, "{long}");
        assert!(short.len() < SYSTEM_LOADER.len(), "{short} must be shorter than {SYSTEM_LOADER}");
        Scratch { dir, long, short }
    }

    /// A copy of `source` named `name`.
    fn copy(&self, source: &Path, name: &str) -> PathBuf {
        let copy = self.dir.join(name);
        fs::copy(source, &copy).unwrap();
        copy
    }

    fn compile(&self, name: &str, flags: &[&str]) -> PathBuf {
        let output = self.dir.join(name);
        let status = Command::new("gcc")
            .arg(fixture("elf/hello.c"))
            .args(flags)
            .arg("-o")
            .arg(&output)
            .status()
            .unwrap();
        assert!(status.success(), "gcc {flags:?} failed");
        output
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn init(args: &[&str]) -> Output {
    Command::new(init_binary()).args(args).output().expect("the init binary runs")
}

/// `set-interpreter`, which must succeed.
fn set(file: &Path, interpreter: &str, extra: &[&str]) -> String {
    let mut args = vec!["set-interpreter", "--interpreter", interpreter];
    args.extend(extra);
    args.push(file.to_str().unwrap());
    let output = init(&args);
    assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The interpreter as binutils' readelf reports it: an independent reader.
fn readelf_interpreter(file: &Path) -> String {
    let output = Command::new("readelf").args(["-lW"]).arg(file).output().expect("readelf (binutils) runs");
    assert!(output.status.success() && output.stderr.is_empty(), "readelf -l: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let line = text.lines().find_map(|line| line.split_once("[Requesting program interpreter: "));
    line.and_then(|(_, rest)| rest.strip_suffix(']')).expect("readelf shows an interpreter").to_string()
}

fn print_interpreter(file: &Path) -> String {
    let output = init(&["print-interpreter", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim_end().to_string()
}

/// The file's bytes and modification time, to tell whether anything was written.
fn snapshot(file: &Path) -> (Vec<u8>, std::time::SystemTime) {
    (fs::read(file).unwrap(), fs::metadata(file).unwrap().modified().unwrap())
}

fn exit_code(program: &Path, args: &[&str]) -> (i32, String) {
    // In a private /dev: nvidia-smi, run as root, would create /dev/nvidiactl on the machine.
    let output = in_private_dev(program).args(args).output().expect("the rewritten program starts");
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().expect("exited, not killed"), text)
}

#[test]
fn nvidia_smi_finds_libnvidia_ml_through_the_runpath_and_rerunning_writes_nothing() {
    let scratch = Scratch::new();
    let nvidia = nvidia_root();
    let libraries = nvidia.join(NVIDIA_LIBRARIES);
    assert!(libraries.join("libnvidia-ml.so.1").exists(), "the soname link comes with the package");
    let runpath = libraries.to_str().unwrap();
    let smi = scratch.copy(&nvidia.join(NVIDIA_SMI), "nvidia-smi");
    assert_eq!(print_interpreter(&smi), SYSTEM_LOADER);
    for loader in [&scratch.long, &scratch.short] {
        set(&smi, loader, &["--runpath", runpath]);
        assert_eq!(readelf_interpreter(&smi), *loader);
        assert_eq!(print_interpreter(&smi), *loader);
        let (code, text) = exit_code(&smi, &[]);
        assert_eq!(code, NO_DRIVER, "libnvidia-ml found through RUNPATH, then no driver: {text}");
        assert!(text.contains("couldn't communicate with the NVIDIA driver"), "{text}");
        let before = snapshot(&smi);
        let again = set(&smi, loader, &["--runpath", runpath]);
        assert!(again.contains("not written"), "{again}");
        assert!(snapshot(&smi) == before, "a second run must not touch the file");
    }
    // Without the runpath the library is not found: the runpath is what made the difference.
    let bare = scratch.copy(&nvidia.join(NVIDIA_SMI), "nvidia-smi-bare");
    set(&bare, &scratch.long, &[]);
    assert_eq!(exit_code(&bare, &[]).0, NO_LIBRARY);
}

#[test]
fn ls_as_a_pie_runs_with_a_longer_and_a_shorter_interpreter() {
    let scratch = Scratch::new();
    let ls = scratch.copy(Path::new("/usr/bin/ls"), "ls");
    fs::write(scratch.dir.join("marker-file"), "").unwrap();
    for loader in [&scratch.long, &scratch.short] {
        set(&ls, loader, &[]);
        assert_eq!(readelf_interpreter(&ls), *loader);
        let (code, listing) = exit_code(&ls, &[scratch.dir.to_str().unwrap()]);
        assert_eq!(code, 0, "{listing}");
        assert!(listing.lines().any(|line| line == "marker-file"), "{listing}");
    }
}

#[test]
fn a_non_pie_c_program_runs_with_a_longer_and_a_shorter_interpreter() {
    let scratch = Scratch::new();
    let hello = scratch.compile("hello", &["-no-pie"]);
    for loader in [&scratch.long, &scratch.short] {
        set(&hello, loader, &[]);
        assert_eq!(readelf_interpreter(&hello), *loader);
        assert_eq!(exit_code(&hello, &[]), (0, "hello from the ELF fixture\n".to_string()));
    }
}

#[test]
fn output_leaves_the_input_alone_and_keeps_its_mode() {
    let scratch = Scratch::new();
    let hello = scratch.compile("hello", &["-no-pie"]);
    fs::set_permissions(&hello, fs::Permissions::from_mode(0o750)).unwrap();
    let before = snapshot(&hello);
    let output = scratch.dir.join("patched");
    let out = output.to_str().unwrap();
    set(&hello, &scratch.long, &["--output", out]);
    assert!(snapshot(&hello) == before, "the input is untouched");
    assert_eq!(fs::metadata(&output).unwrap().permissions().mode() & 0o7777, 0o750);
    assert_eq!(readelf_interpreter(&output), scratch.long);
    assert_eq!(exit_code(&output, &[]).0, 0);
    let written = snapshot(&output);
    assert!(set(&hello, &scratch.long, &["--output", out]).contains("not written"));
    assert!(snapshot(&output) == written, "the output already holds the result");
}

#[test]
fn bad_inputs_are_refused_with_a_reason_and_left_untouched() {
    let scratch = Scratch::new();
    let text = scratch.dir.join("script.sh");
    fs::write(&text, "#!/bin/sh\necho not an ELF file\n").unwrap();
    let object32 = scratch.dir.join("f32.o");
    let status = Command::new("gcc")
        .args(["-m32", "-c"])
        .arg(fixture("elf/greeting.c"))
        .arg("-o")
        .arg(&object32)
        .status()
        .unwrap();
    assert!(status.success(), "gcc -m32 -c needs only the assembler's --32");
    let static_program = scratch.compile("static", &["-static"]);
    let ls = fs::read("/usr/bin/ls").unwrap();
    let truncated = scratch.dir.join("ls-truncated");
    fs::write(&truncated, &ls[..ls.len() / 2]).unwrap();
    let cases = [
        (&text, "not an ELF file"),
        (&object32, "32-bit"),
        (&static_program, "statically linked"),
        (&truncated, "truncated"),
    ];
    for (file, reason) in cases {
        let before = snapshot(file);
        let path = file.to_str().unwrap();
        let output = init(&["set-interpreter", "--interpreter", &scratch.long, path]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{path}: {output:?}");
        assert!(stderr.contains(reason) && stderr.contains(path), "{path}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(snapshot(file) == before, "{path} must be left as it was");
    }
    let leftovers: Vec<_> = fs::read_dir(&scratch.dir)
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains("set-interpreter"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let output = init(&["print-interpreter", static_program.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("statically linked"));
}

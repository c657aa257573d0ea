//! The rewrite on small programs built here with gcc: each rewritten program must still run,
//! and binutils' readelf (an independent reader) must agree on what was written.

use crate::testing::Scratch;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::edit::APPEND_ALIGN;
use super::*;

const SYSTEM_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/elf");

/// What these tests add to the shared scratch directory: loader links and compiled programs.
impl Scratch {
    /// A symlink to the system loader at `relative` (directories created), as an absolute path.
    fn loader_link(&self, relative: &str) -> String {
        let link = self.0.join(relative);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(SYSTEM_LOADER, &link).unwrap();
        link.to_str().unwrap().to_string()
    }

    /// A loader path of more than 100 bytes, far longer than the 28 bytes of .interp.
    fn long_loader(&self) -> String {
        let path = self.loader_link(&format!("{}/{}/ld-linux-x86-64.so.2", "d".repeat(50), "e".repeat(40)));
        assert!(path.len() > 100);
        path
    }

    /// Compiles fixtures/elf/`source` with `flags` into `name`.
    fn compile(&self, source: &str, name: &str, flags: &[&str]) -> PathBuf {
        let output = self.path(name);
        let status = Command::new("gcc")
            .arg(Path::new(FIXTURES).join(source))
            .args(flags)
            .arg("-o")
            .arg(&output)
            .status()
            .expect("gcc runs");
        assert!(status.success(), "gcc {flags:?} {source} failed");
        output
    }

    /// Compiles C source text (not a fixture file) with `flags` into `name`.
    fn compile_text(&self, text: &str, name: &str, flags: &[&str]) -> PathBuf {
        let source = self.path(&format!("{name}.c"));
        fs::write(&source, text).unwrap();
        let output = self.path(name);
        let status = Command::new("gcc").arg(&source).args(flags).arg("-o").arg(&output).status().unwrap();
        assert!(status.success(), "gcc {flags:?} {name}.c failed");
        output
    }
}

/// Runs `program` and returns its stdout, failing the test if it does not exit 0.
fn run(program: &Path) -> String {
    let output = Command::new(program).output().expect("the program starts");
    assert!(output.status.success(), "{} failed: {:?}", program.display(), output);
    String::from_utf8(output.stdout).unwrap()
}

fn readelf(flag: &str, file: &Path) -> String {
    let output =
        Command::new("readelf").arg(flag).arg("-W").arg(file).output().expect("readelf (binutils) runs");
    assert!(output.status.success(), "readelf {flag} {}: {output:?}", file.display());
    String::from_utf8(output.stdout).unwrap()
}

/// The interpreter as binutils' readelf reports it.
fn readelf_interpreter(file: &Path) -> String {
    let text = readelf("-l", file);
    let line = text.lines().find_map(|line| line.split_once("[Requesting program interpreter: "));
    line.and_then(|(_, rest)| rest.strip_suffix(']')).expect("readelf shows an interpreter").to_string()
}

/// The DT_RUNPATH as binutils' readelf reports it.
fn readelf_runpath(file: &Path) -> Option<String> {
    let text = readelf("-d", file);
    let line = text.lines().find_map(|line| line.split_once("(RUNPATH)")?.1.split_once("Library runpath: ["));
    line.and_then(|(_, rest)| rest.strip_suffix(']')).map(str::to_string)
}

fn load_segments(file: &Path) -> usize {
    readelf("-l", file).lines().filter(|line| line.trim_start().starts_with("LOAD ")).count()
}

/// Rewrites `file` in place with the library API, returning whether anything was written.
fn set(file: &Path, interpreter: &str, runpath: Option<&str>) -> Outcome {
    set_interpreter(file, interpreter, runpath, None).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn reads_the_interpreter_of_pie_and_non_pie_programs() {
    let scratch = Scratch::new("elf-read");
    for flags in [&["-pie"][..], &["-no-pie"]] {
        let program = scratch.compile("hello.c", "hello", flags);
        let interpreter = read_interpreter(&fs::read(&program).unwrap()).unwrap();
        assert_eq!(interpreter.as_deref(), Some(SYSTEM_LOADER), "{flags:?}");
        assert_eq!(file_interpreter(&program).unwrap(), interpreter, "from the headers only");
    }
    let program = fs::read(scratch.compile("hello.c", "hello", &[])).unwrap();
    let truncated = scratch.0.join("truncated");
    fs::write(&truncated, &program[..100]).unwrap();
    let error = file_interpreter(&truncated).unwrap_err();
    assert!(error.starts_with(&format!("{}: ", truncated.display())), "{error}");
    assert!(file_interpreter(&scratch.0.join("missing")).unwrap_err().contains("cannot open"));
}

#[test]
fn a_shorter_path_is_written_in_place() {
    let scratch = Scratch::new("s");
    let short = scratch.loader_link("ld");
    assert!(short.len() < SYSTEM_LOADER.len(), "{short} must be shorter than the original");
    for flags in [&["-pie"][..], &["-no-pie"]] {
        let program = scratch.compile("hello.c", "hello", flags);
        let before = fs::read(&program).unwrap();
        assert_eq!(set(&program, &short, None), Outcome::Written);
        let after = fs::read(&program).unwrap();
        assert_eq!(after.len(), before.len(), "{flags:?}: in place, the size stays");
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(changed <= SYSTEM_LOADER.len(), "{flags:?}: {changed} bytes changed, only the path may");
        assert_eq!(readelf_interpreter(&program), short);
        assert_eq!(run(&program), "hello from the ELF fixture\n");
    }
}

#[test]
fn a_longer_path_gets_a_new_load_segment_and_the_program_runs() {
    let scratch = Scratch::new("elf-long");
    let long = scratch.long_loader();
    for flags in [&["-pie"][..], &["-no-pie"]] {
        let program = scratch.compile("hello.c", "hello", flags);
        let (size, loads) = (fs::metadata(&program).unwrap().len(), load_segments(&program));
        assert_eq!(set(&program, &long, None), Outcome::Written);
        assert_eq!(readelf_interpreter(&program), long, "{flags:?}");
        assert_eq!(load_segments(&program), loads + 1, "{flags:?}: one PT_NOTE became a PT_LOAD");
        let grown = fs::metadata(&program).unwrap().len() - size;
        assert!(grown <= long.len() as u64 + 1 + APPEND_ALIGN, "{flags:?}: grew by {grown} bytes");
        assert_eq!(run(&program), "hello from the ELF fixture\n", "{flags:?}");
        // Also through the loader explicitly: glibc checks the segments' alignment itself.
        let explicit = Command::new(SYSTEM_LOADER).arg(&program).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&explicit.stdout), "hello from the ELF fixture\n");
    }
}

#[test]
fn a_temporary_file_left_by_a_run_with_our_pid_is_replaced() {
    let scratch = Scratch::new("elf-leftover");
    let program = scratch.compile("hello.c", "hello", &["-no-pie"]);
    let leftover = scratch.path(&format!(".hello.set-interpreter-{}", std::process::id()));
    fs::write(&leftover, "half of an earlier rewrite").unwrap();
    let loader = scratch.long_loader();
    assert_eq!(set(&program, &loader, None), Outcome::Written);
    assert_eq!(readelf_interpreter(&program), loader);
    assert_eq!(run(&program), "hello from the ELF fixture\n");
    assert!(!leftover.exists(), "renamed over the program");
}

#[test]
fn rewriting_twice_changes_nothing_and_a_third_path_grows_the_added_segment() {
    let scratch = Scratch::new("elf-again");
    let long = scratch.long_loader();
    let longer = scratch.loader_link(&format!("{}/ld-linux-x86-64.so.2", "f".repeat(150)));
    let program = scratch.compile("hello.c", "hello", &["-no-pie"]);
    let loads = load_segments(&program);
    set(&program, &long, None);
    let once = fs::read(&program).unwrap();
    assert_eq!(rewrite(&once, &long, None).unwrap(), None, "the same interpreter again: nothing to do");
    assert_eq!(set(&program, &long, None), Outcome::AlreadySet);
    assert_eq!(fs::read(&program).unwrap(), once);
    set(&program, &longer, None);
    assert_eq!(readelf_interpreter(&program), longer);
    assert_eq!(load_segments(&program), loads + 1, "the added segment grew; no second one");
    assert_eq!(run(&program), "hello from the ELF fixture\n");
    set(&program, SYSTEM_LOADER, None);
    assert_eq!(readelf_interpreter(&program), SYSTEM_LOADER, "back, in place in the added segment");
    assert_eq!(run(&program), "hello from the ELF fixture\n");
}

/// Each program header of a 64-bit little-endian ELF image with its offset in the file, for
/// tests that craft a file by editing one header in place.
fn program_headers_at(bytes: &[u8]) -> Vec<(usize, goblin::elf64::program_header::ProgramHeader)> {
    use goblin::elf64::header::Header;
    use goblin::elf64::program_header::SIZEOF_PHDR;
    use scroll::{LE, Pread};
    let header: Header = bytes.pread_with(0, LE).unwrap();
    (0..usize::from(header.e_phnum))
        .map(|index| header.e_phoff as usize + index * SIZEOF_PHDR)
        .map(|at| (at, bytes.pread_with(at, LE).unwrap()))
        .collect()
}

/// The offset of the `PT_INTERP` header and the header itself.
fn interp_header(bytes: &[u8]) -> (usize, goblin::elf64::program_header::ProgramHeader) {
    use goblin::elf::program_header::PT_INTERP;
    program_headers_at(bytes).into_iter().find(|(_, header)| header.p_type == PT_INTERP).unwrap()
}

#[test]
fn a_last_segment_with_more_than_the_read_flag_is_not_grown() {
    // Found by the fuzzer (fuzz/ target `elf`): a last PT_LOAD that ends the file, readable,
    // not writable or executable, but with an OS-specific flag bit, was grown, and the appended
    // bytes were mapped with that bit too.
    use goblin::elf::Elf;
    use goblin::elf::program_header::{PF_R, PT_LOAD};
    use scroll::{LE, Pwrite};

    let scratch = Scratch::new("elf-flags");
    let program = scratch.compile("hello.c", "hello", &["-no-pie"]);
    set(&program, &scratch.long_loader(), None);
    let mut bytes = fs::read(&program).unwrap();
    let (added_at, mut added) = program_headers_at(&bytes)
        .into_iter()
        .filter(|(_, header)| header.p_type == PT_LOAD)
        .max_by_key(|(_, header)| header.p_vaddr)
        .unwrap();
    assert_eq!(added.p_flags, PF_R, "the segment the first rewrite added");
    added.p_flags = PF_R | 0x0010_0000;
    bytes.pwrite_with(added, added_at, LE).unwrap();

    let longer = format!("/{}/ld-linux-x86-64.so.2", "f".repeat(150));
    if let Ok(Some(output)) = rewrite(&bytes, &longer, None) {
        let elf = Elf::parse(&output).unwrap();
        let same = elf.program_headers.iter().find(|segment| segment.p_flags == added.p_flags).unwrap();
        assert_eq!((same.p_offset, same.p_filesz), (added.p_offset, added.p_filesz), "not grown");
    }
}

/// hello linked against libgreeting.so in `lib/`, with extra link `flags` (e.g. an rpath).
fn program_with_library(scratch: &Scratch, flags: &[&str]) -> PathBuf {
    let lib = scratch.path("lib");
    fs::create_dir_all(&lib).unwrap();
    let library = lib.join("libgreeting.so");
    if !library.exists() {
        let source = Path::new(FIXTURES).join("greeting.c");
        let status =
            Command::new("gcc").args(["-shared", "-fPIC", "-o"]).arg(&library).arg(source).status().unwrap();
        assert!(status.success());
    }
    let mut all = vec!["-DWITH_LIB", "-no-pie"];
    all.extend(flags);
    let lib_flag = format!("-L{}", lib.display());
    all.extend([lib_flag.as_str(), "-lgreeting"]);
    scratch.compile("hello.c", "hello-lib", &all)
}

const WITH_LIBRARY: &str = "greeting from the fixture library\nhello from the ELF fixture\n";

#[test]
fn a_runpath_is_added_in_a_spare_slot_and_finds_the_library() {
    let scratch = Scratch::new("elf-runpath");
    let program = program_with_library(&scratch, &[]);
    assert_eq!(readelf_runpath(&program), None);
    let missing = Command::new(&program).output().unwrap();
    assert_eq!(missing.status.code(), Some(127), "without a runpath the library is not found");
    let lib = scratch.path("lib").display().to_string();
    let long = scratch.long_loader();
    set(&program, &long, Some(&lib));
    assert_eq!(readelf_runpath(&program).as_deref(), Some(lib.as_str()));
    assert_eq!(readelf_interpreter(&program), long);
    assert_eq!(run(&program), WITH_LIBRARY);
    // The string table moved: symbols and needed libraries still resolve through the copy.
    assert!(readelf("-d", &program).contains("Shared library: [libgreeting.so]"));
    assert_eq!(set(&program, &long, Some(&lib)), Outcome::AlreadySet);
}

#[test]
fn a_shorter_runpath_replaces_the_old_string_in_place() {
    let scratch = Scratch::new("elf-runpath-short");
    let lib = scratch.path("lib").display().to_string();
    let old = format!("-Wl,-rpath,/nonexistent/{}", "x".repeat(200));
    let program = program_with_library(&scratch, &[&old]);
    let size = fs::metadata(&program).unwrap().len();
    set(&program, SYSTEM_LOADER, Some(&lib));
    assert_eq!(fs::metadata(&program).unwrap().len(), size, "in place: the size stays");
    assert_eq!(readelf_runpath(&program).as_deref(), Some(lib.as_str()));
    assert_eq!(run(&program), WITH_LIBRARY);
}

#[test]
fn an_rpath_becomes_a_runpath() {
    let scratch = Scratch::new("elf-rpath");
    let lib = scratch.path("lib").display().to_string();
    let program = program_with_library(&scratch, &["-Wl,--disable-new-dtags,-rpath,/old"]);
    assert!(readelf("-d", &program).contains("(RPATH)"));
    set(&program, SYSTEM_LOADER, Some(&lib));
    let dynamic = readelf("-d", &program);
    assert!(!dynamic.contains("(RPATH)"), "{dynamic}");
    assert_eq!(readelf_runpath(&program).as_deref(), Some(lib.as_str()));
    assert_eq!(run(&program), WITH_LIBRARY);
}

#[test]
fn a_runpath_whose_tail_is_another_string_is_not_overwritten() {
    // The linker stores DT_NEEDED libm.so.6 as the tail of this runpath string.
    let scratch = Scratch::new("elf-shared-tail");
    let text = "#include <math.h>\n#include <stdio.h>\n\
                int main(void) { volatile double x = 0; printf(\"%.1f\\n\", cos(x)); return 0; }\n";
    let program = scratch.compile_text(text, "cosine", &["-lm", "-Wl,-rpath,/nonexistent/libm.so.6"]);
    let size = fs::metadata(&program).unwrap().len();
    set(&program, SYSTEM_LOADER, Some("/x"));
    assert!(fs::metadata(&program).unwrap().len() > size, "not in place: the string table was copied");
    assert_eq!(readelf_runpath(&program).as_deref(), Some("/x"));
    assert!(readelf("-d", &program).contains("Shared library: [libm.so.6]"));
    assert_eq!(run(&program), "1.0\n");
}

#[test]
fn refusals_say_why() {
    let scratch = Scratch::new("elf-refuse");
    let object32 = scratch.path("f32.o");
    let status = Command::new("gcc")
        .args(["-m32", "-c", "-x", "c", "-", "-o"])
        .arg(&object32)
        .stdin(std::fs::File::open(Path::new(FIXTURES).join("greeting.c")).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "gcc -m32 -c (the assembler's --32) works without 32-bit libraries");
    let static_program = scratch.compile("hello.c", "static", &["-static"]);
    let dynamic = fs::read(scratch.compile("hello.c", "hello", &[])).unwrap();
    let mut big_endian = dynamic.clone();
    big_endian[5] = 2;
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("text", b"#!/bin/sh\necho not an ELF\n".to_vec(), "not an ELF file"),
        ("empty", Vec::new(), "not an ELF file"),
        ("32-bit", fs::read(&object32).unwrap(), "32-bit"),
        ("big-endian", big_endian, "big-endian"),
        ("static", fs::read(&static_program).unwrap(), "statically linked"),
        ("truncated", dynamic[..dynamic.len() / 2].to_vec(), "truncated"),
    ];
    for (name, bytes, expected) in cases {
        let error = rewrite(&bytes, SYSTEM_LOADER, None).unwrap_err();
        assert!(error.contains(expected), "{name}: {error}");
    }
    let empty = rewrite(&dynamic, "", None).unwrap_err();
    assert!(empty.contains("must not be empty"), "{empty}");
}

#[test]
fn broken_inputs_never_panic() {
    // Every truncation and a corrupted byte at every position of the headers: whatever the
    // result, it is a value, not a panic. (cargo fuzz goes further.)
    let scratch = Scratch::new("elf-broken");
    let program = fs::read(scratch.compile("hello.c", "hello", &["-Wl,-rpath,/old/path"])).unwrap();
    let long = "/".to_string() + &"x".repeat(150);
    for len in (0..program.len()).step_by(7) {
        let _ = rewrite(&program[..len], &long, Some("/lib"));
    }
    let headers = program.len().min(0x1000);
    for at in 0..headers {
        for value in [0x00, 0xff, 0x7f] {
            let mut corrupt = program.clone();
            corrupt[at] = value;
            let _ = rewrite(&corrupt, &long, Some("/a/much/longer/runpath/than/before"));
            let _ = read_interpreter(&corrupt);
        }
    }
}

#[test]
fn parts_that_share_bytes_are_refused_not_half_rewritten() {
    // Found by the fuzzer (fuzz/ target `elf`): a PT_INTERP inside the program header table.
    // The new path was written in place, then the table written back over it, and the result
    // named neither loader.
    use goblin::elf64::header::Header;
    use goblin::elf64::program_header::SIZEOF_PHDR;
    use scroll::{LE, Pread, Pwrite};

    let scratch = Scratch::new("elf-overlap");
    let mut program = fs::read(scratch.compile("hello.c", "hello", &[])).unwrap();
    let header: Header = program.pread_with(0, LE).unwrap();
    let (interp_at, mut interp) = interp_header(&program);
    (interp.p_offset, interp.p_filesz) = (header.e_phoff, SIZEOF_PHDR as u64);
    program.pwrite_with(interp, interp_at, LE).unwrap();
    // The first header's type (PT_PHDR, 6) is now the "path": a 6 then NULs.
    assert_eq!(read_interpreter(&program).unwrap().as_deref(), Some("\u{6}"));

    let error = rewrite(&program, "/l", None).unwrap_err();
    assert_eq!(
        error,
        "the PT_INTERP segment and the program header table overlap in the file: rewriting one would \
         damage the other"
    );
}

#[test]
fn nothing_is_written_over_the_elf_header() {
    // Found by the fuzzer (fuzz/ target `elf`): a PT_INTERP at offset 24, inside the ELF header.
    // The new path, with its padding, was written there in place and zeroed e_phoff, so the
    // result's program headers were read from offset 0.
    use scroll::{LE, Pwrite};

    let scratch = Scratch::new("elf-header");
    let mut program = fs::read(scratch.compile("hello.c", "hello", &[])).unwrap();
    let (interp_at, mut interp) = interp_header(&program);
    (interp.p_offset, interp.p_filesz) = (24, 28);
    program.pwrite_with(interp, interp_at, LE).unwrap();
    assert!(read_interpreter(&program).is_ok(), "the crafted file still reads");

    let error = rewrite(&program, "/l", None).unwrap_err();
    assert_eq!(
        error,
        "the PT_INTERP segment overlaps the ELF header in the file: rewriting it would damage the header"
    );
}

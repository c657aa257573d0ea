//! The ELF reader and interpreter rewriter (`gpu::elf::read_interpreter`, `rewrite`). The first
//! byte picks the interpreter and runpath to set (short ones that fit in place, long ones that
//! must be appended); the rest is the file. Any file gives a result or an error, never a panic,
//! and every rewritten file:
//! - names the new interpreter when read back, and a second rewrite finds nothing to do;
//! - keeps every program header of the input as it was (goblin reads both), except the ones
//!   src/gpu/elf.rs documents changing: `PT_INTERP` when the path moved to the appended bytes,
//!   one `PT_NOTE` or `PT_NULL` turned into the read-only `PT_LOAD` that maps them, or, instead,
//!   a read-only `PT_LOAD` that already ended the file, grown to map them too; a new `PT_LOAD`
//!   maps only appended bytes, above every address the input maps;
//! - is at least as long as the input.

#![no_main]

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::Elf;
use goblin::elf::program_header::{PF_R, PT_INTERP, PT_LOAD, PT_NOTE, PT_NULL, ProgramHeader};
use libfuzzer_sys::fuzz_target;
use nix2gpu_init::gpu::elf;

const INTERPRETERS: [&str; 4] = [
    "/l",
    "/lib64/ld-linux-x86-64.so.2",
    "/nix/store/g2ddv0k8b5j2hzlfbnbnaxz4hw4b2kqc-glibc-2.40-66/lib/ld-linux-x86-64.so.2",
    "/nix/store/0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000-a-long-loader-path/lib/ld-linux-x86-64.so.2",
];
const RUNPATHS: [Option<&str>; 4] = [
    None,
    Some("/r"),
    Some("/nix/store/r0mlixcm1b7zq9zjvlnp4x9r5qgbqv3i-nvidia-x11-570.86.16/lib"),
    Some(
        "/run/opengl-driver/lib:/nix/store/r0mlixcm1b7zq9zjvlnp4x9r5qgbqv3i-nvidia-x11-570.86.16/lib:/usr/lib/x86_64-linux-gnu",
    ),
];

fuzz_target!(|data: &[u8]| {
    let Some((&choice, input)) = data.split_first() else { return };
    let _ = elf::read_interpreter(input);
    let interpreter = INTERPRETERS[usize::from(choice & 3)];
    let runpath = RUNPATHS[usize::from(choice >> 2 & 3)];
    let Ok(Some(output)) = elf::rewrite(input, interpreter, runpath) else { return };

    assert_eq!(elf::read_interpreter(&output), Ok(Some(interpreter.to_string())));
    assert_eq!(elf::rewrite(&output, interpreter, runpath), Ok(None), "a second rewrite changed more");
    assert!(output.len() >= input.len(), "the file shrank");
    segments_kept(input, &output);
});

/// The program headers of a 64-bit little-endian ELF file, read by goblin.
fn program_headers(bytes: &[u8]) -> Vec<ProgramHeader> {
    let header = Elf::parse_header(bytes).expect("goblin reads the ELF header");
    let ctx = Ctx::new(Container::Big, Endian::Little);
    let count = usize::from(header.e_phnum);
    ProgramHeader::parse(bytes, header.e_phoff as usize, count, ctx)
        .expect("goblin reads the program headers")
}

fn segments_kept(input: &[u8], output: &[u8]) {
    let before = program_headers(input);
    let mut after = program_headers(output);
    assert_eq!(before.len(), after.len(), "the program header table changed size");
    // Pair off the headers that are unchanged; what is left on each side must be documented.
    let mut changed = Vec::new();
    for segment in before {
        match after.iter().position(|other| *other == segment) {
            Some(index) => {
                after.swap_remove(index);
            }
            None => changed.push(segment),
        }
    }
    let count = |kinds: &[u32]| changed.iter().filter(|s| kinds.contains(&s.p_type)).count();
    assert!(count(&[PT_INTERP]) <= 1, "{changed:?}");
    assert!(
        count(&[PT_NOTE, PT_NULL]) + count(&[PT_LOAD]) <= 1,
        "more than one segment for the appendix: {changed:?}"
    );
    assert_eq!(count(&[PT_INTERP, PT_NOTE, PT_NULL, PT_LOAD]), changed.len(), "changed: {changed:?}");
    let size = input.len() as u64;
    let mapped_end = before_loads_end(input);
    for segment in &after {
        match segment.p_type {
            PT_INTERP => {}
            PT_LOAD => {
                assert_eq!(segment.p_flags, PF_R, "the appendix is mapped read-only: {segment:?}");
                assert_eq!(segment.p_offset + segment.p_filesz, output.len() as u64, "{segment:?}");
                let grown = changed.iter().find(|old| old.p_type == PT_LOAD);
                if let Some(old) = grown {
                    let same_start = (old.p_offset, old.p_vaddr, old.p_align)
                        == (segment.p_offset, segment.p_vaddr, segment.p_align);
                    assert!(same_start && segment.p_filesz > old.p_filesz, "{old:?} became {segment:?}");
                } else {
                    assert!(segment.p_offset >= size, "a new segment maps old bytes: {segment:?}");
                    assert!(
                        segment.p_vaddr >= mapped_end,
                        "a new segment below mapped addresses: {segment:?}"
                    );
                }
            }
            _ => panic!("a segment changed into {segment:?}; before: {changed:?}"),
        }
    }
}

/// The end of the highest address the input's `PT_LOAD`s map.
fn before_loads_end(input: &[u8]) -> u64 {
    let loads = program_headers(input).into_iter().filter(|segment| segment.p_type == PT_LOAD);
    loads.map(|segment| segment.p_vaddr + segment.p_memsz).max().unwrap_or(0)
}

//! Sets the ELF interpreter (`PT_INTERP`) and `DT_RUNPATH` of a dynamically linked executable,
//! so that a foreign binary such as the injected `nvidia-smi` runs with the image's (Nix) loader
//! and finds `libnvidia-ml.so.1` without `/etc/ld.so.cache`.
//!
//! Hand-written on purpose: goblin (used here for the header structs) only parses, `object`'s
//! builder re-lays out the whole file, and the crates that patch (`elb`, `arwen`) are young and
//! bring a second ELF stack. What the init needs is small and can be done without moving
//! anything the loader or the kernel has already been told about:
//!
//! 1. **In place**, when the new interpreter fits into the current `PT_INTERP` bytes: the rest is
//!    NUL-filled and the segment keeps its size, so a later, longer path can still use it.
//! 2. Otherwise the new strings are **appended to the file and mapped by a read-only `PT_LOAD`**:
//!    a `PT_NOTE` that nothing needs at run time (or a `PT_NULL`) becomes that `PT_LOAD`, placed
//!    after the last `PT_LOAD` above every mapped address, with `p_vaddr ≡ p_offset` modulo the
//!    binary's own largest alignment. The program header table keeps its place and size, so
//!    `AT_PHDR`, `PT_PHDR` and old kernels are unaffected (patchelf moves or grows it). A segment
//!    added this way ends the file, so a later run grows it instead of taking another note.
//!
//! `DT_RUNPATH` is rewritten in place when the old `DT_RUNPATH`/`DT_RPATH` string is long enough
//! and no other reference points into it (linkers let a string that ends another share its
//! bytes). Otherwise the dynamic string table is copied into the appended bytes with the new
//! string at its end and `DT_STRTAB`/`DT_STRSZ` point there; the entry is the old
//! `DT_RUNPATH`, a converted `DT_RPATH`, or a spare `DT_NULL` slot after the terminator.
//!
//! Only 64-bit little-endian executables and shared objects are handled. Any input gives `Ok` or
//! an `Err` that says why, never a panic: every read is bounds-checked and every sum is checked,
//! because the bytes come from outside.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod edit;
mod image;

use edit::{Edit, Patch};
use image::{FileSource, Image, Source};

type Result<T> = std::result::Result<T, String>;

/// The kernel reads at most PATH_MAX bytes of `PT_INTERP`, its NUL included.
const PATH_MAX: usize = 4096;

/// The interpreter a dynamically linked ELF file asks for; `None` for a static one.
pub fn read_interpreter(bytes: &[u8]) -> Result<Option<String>> {
    interpreter(&bytes)
}

/// The interpreter of the ELF file at `file`, read from its headers only (an executable may be
/// many megabytes); `None` for a static one. Errors name the file.
pub fn file_interpreter(file: &Path) -> Result<Option<String>> {
    let (input, metadata) = open(file)?;
    interpreter(&read_head(&input, &metadata, file)?).map_err(|e| format!("{}: {e}", file.display()))
}

/// `file` opened for reading, and what it is (its size and mode).
fn open(file: &Path) -> Result<(File, fs::Metadata)> {
    let input = File::open(file).map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let metadata = input.metadata().map_err(|e| format!("cannot stat {}: {e}", file.display()))?;
    Ok((input, metadata))
}

/// `input` (the file at `file`) as a source of its bytes, its head read.
fn read_head<'f>(input: &'f File, metadata: &fs::Metadata, file: &Path) -> Result<FileSource<'f>> {
    FileSource::new(input, metadata.len()).map_err(|e| format!("cannot read {}: {e}", file.display()))
}

fn interpreter(source: &dyn Source) -> Result<Option<String>> {
    let image = Image::parse(source)?;
    Ok(image.interpreter()?.map(|path| String::from_utf8_lossy(&path).into_owned()))
}

/// The file with `interpreter` as its `PT_INTERP` and, when given, `runpath` as its
/// `DT_RUNPATH`; `None` when it has both already (nothing to write).
pub fn rewrite(bytes: &[u8], interpreter: &str, runpath: Option<&str>) -> Result<Option<Vec<u8>>> {
    let patch = plan(&bytes, interpreter, runpath)?;
    if patch.is_empty() {
        return Ok(None);
    }
    let mut output = bytes.to_vec();
    output.resize(usize::try_from(patch.size).map_err(|_| "the result is too large")?, 0);
    patch.overlay(0, &mut output);
    Ok(Some(output))
}

/// What [`set_interpreter`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The file was written.
    Written,
    /// The target already held the result: nothing was written.
    AlreadySet,
}

/// Sets the interpreter (and runpath) of the ELF file `file`, writing the result to `output`
/// or, without one, replacing `file` itself (through a symlink, the file it points to).
///
/// Only the headers and tables involved are read (PID 1 never holds a whole binary in
/// memory); the result is the input copied in the kernel plus those few writes, made in a
/// temporary file beside the target that then replaces it (rename), with the input's
/// permission bits. When the target already holds the result nothing is written, so running
/// twice neither grows nor touches the file.
pub fn set_interpreter(
    file: &Path,
    interpreter: &str,
    runpath: Option<&str>,
    output: Option<&Path>,
) -> Result<Outcome> {
    let (input, metadata) = open(file)?;
    let source = read_head(&input, &metadata, file)?;
    let patch = plan(&source, interpreter, runpath).map_err(|e| format!("{}: {e}", file.display()))?;
    let target = match output {
        None if patch.is_empty() => return Ok(Outcome::AlreadySet),
        None => resolve(file)?,
        Some(output) if holds_result(output, &source, &patch) => return Ok(Outcome::AlreadySet),
        Some(output) => output.to_path_buf(),
    };
    write_patched(&input, metadata.len(), &patch, &target, metadata.permissions().mode() & 0o7777)
        .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    Ok(Outcome::Written)
}

/// `file`, or the file it leads to if it is a symlink (the link itself stays).
fn resolve(file: &Path) -> Result<PathBuf> {
    let is_link = fs::symlink_metadata(file).is_ok_and(|metadata| metadata.is_symlink());
    if !is_link {
        return Ok(file.to_path_buf());
    }
    fs::canonicalize(file).map_err(|e| format!("cannot resolve {}: {e}", file.display()))
}

/// The changes that give `source` this interpreter and runpath (none if it has them).
fn plan(source: &dyn Source, interpreter: &str, runpath: Option<&str>) -> Result<Patch> {
    check_argument("interpreter", interpreter)?;
    if interpreter.len() >= PATH_MAX {
        return Err(format!(
            "the interpreter path is {} bytes; the kernel takes at most {}",
            interpreter.len(),
            PATH_MAX - 1
        ));
    }
    if let Some(runpath) = runpath {
        check_argument("runpath", runpath)?;
    }
    let image = Image::parse(source)?;
    let current = image.interpreter()?.ok_or(
        "statically linked (no PT_INTERP program header): there is no interpreter to set, and none is needed",
    )?;
    let dynamic = image.dynamic()?;
    let new_runpath = match (runpath, &dynamic) {
        (None, _) => None,
        (Some(_), None) => return Err("no PT_DYNAMIC segment, so there is no DT_RUNPATH to set".into()),
        (Some(wanted), Some(dynamic)) => {
            (image.runpath(dynamic)?.as_deref() != Some(wanted.as_bytes())).then_some(wanted)
        }
    };
    if current == interpreter.as_bytes() && new_runpath.is_none() {
        return Ok(Patch::unchanged(image.size()));
    }
    let mut edit = Edit::new(&image, dynamic);
    if current != interpreter.as_bytes() {
        edit.set_interpreter(interpreter.as_bytes())?;
    }
    if let Some(runpath) = new_runpath {
        edit.set_runpath(runpath.as_bytes())?;
    }
    edit.finish()
}

/// Refuses an empty value or one with a NUL byte (it could not be stored as a C string).
fn check_argument(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(format!("the {what} must not be empty"));
    }
    if value.contains('\0') {
        return Err(format!("the {what} must not contain a NUL byte"));
    }
    Ok(())
}

/// How much of two files is compared at a time.
const COMPARE_CHUNK: usize = 64 * 1024;

/// Whether the file at `path` holds exactly `source` with `patch` applied.
fn holds_result(path: &Path, source: &dyn Source, patch: &Patch) -> bool {
    let Ok(existing) = File::open(path) else { return false };
    if existing.metadata().map(|m| m.len()).ok() != Some(patch.size) {
        return false;
    }
    let (mut expected, mut found) = (vec![0; COMPARE_CHUNK], vec![0; COMPARE_CHUNK]);
    let mut offset = 0;
    while offset < patch.size {
        let len = (patch.size - offset).min(COMPARE_CHUNK as u64) as usize;
        let (expected, found) = (&mut expected[..len], &mut found[..len]);
        // The input's bytes where it has them, zeros past its end, then the writes.
        let from_input = source.size().saturating_sub(offset).min(len as u64) as usize;
        expected.fill(0);
        if source.read_exact_at(&mut expected[..from_input], offset).is_err() {
            return false;
        }
        patch.overlay(offset, expected);
        if existing.read_exact_at(found, offset).is_err() || expected != found {
            return false;
        }
        offset += len as u64;
    }
    true
}

/// Writes `input` (`size` bytes) with `patch` applied to a temporary file beside `target`, then
/// renames it over `target`, so that a reader sees the old file or the new one, never a
/// partial one. A few system calls each: nvidia-smi is rewritten at every boot.
fn write_patched(input: &File, size: u64, patch: &Patch, target: &Path, mode: u32) -> io::Result<()> {
    let name = target.file_name().ok_or_else(|| io::Error::other("the path names no file"))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".set-interpreter-{}", std::process::id()));
    let temporary = target.with_file_name(temporary_name);
    let written = create_temporary(&temporary, mode).and_then(|file| {
        copy_contents(input, &file, size)?;
        // Writes past the input's end extend the file; only a patch that ends in a gap needs
        // the length set (none does today: appended bytes end the file).
        let written_end = patch.writes.iter().map(|(offset, bytes)| offset + bytes.len() as u64).max();
        if written_end.unwrap_or(0).max(size) < patch.size {
            file.set_len(patch.size)?;
        }
        for (offset, bytes) in &patch.writes {
            file.write_all_at(bytes, *offset)?;
        }
        // The umask may have narrowed the mode given to open.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| fs::rename(&temporary, target));
    if renamed.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    renamed
}

/// A new file at `path`. One left there by a run that died with our pid (PID 1 again, after a
/// restart) is removed first: it would make creating it fail forever.
fn create_temporary(path: &Path, mode: u32) -> io::Result<File> {
    let create = || OpenOptions::new().write(true).create_new(true).mode(mode).open(path);
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            create()
        }
        created => created,
    }
}

/// Copies the first `len` bytes of `input` to the start of `output` in the kernel, with
/// copy_file_range (a reflink where the file system shares blocks). Where the kernel cannot
/// copy between these two files (older kernels across file systems), `io::copy` does it its
/// own way. `input` is read at offsets only, so its position is still at the start.
fn copy_contents(input: &File, output: &File, len: u64) -> io::Result<()> {
    use nix::errno::Errno;
    let mut copied = 0;
    while copied < len {
        let (mut from, mut to) = (copied as i64, copied as i64); // Below the file's size.
        let left = usize::try_from(len - copied).unwrap_or(usize::MAX);
        match nix::fcntl::copy_file_range(input, Some(&mut from), output, Some(&mut to), left) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank")),
            Ok(count) => copied += count as u64,
            Err(Errno::EINTR) => {}
            Err(Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) if copied == 0 => {
                return io::copy(&mut &*input, &mut &*output).map(drop);
            }
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

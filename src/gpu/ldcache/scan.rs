//! Which files of the given directories become cache entries, by glibc ldconfig's rules
//! (`search_dir` in elf/ldconfig.c):
//!
//! - candidates are regular files and symlinks named like a library (`lib*.so*`, `ld-*.so*`,
//!   `ld.so.*`, `ld64.so.*`), minus prelink's temporary files, that read as a qualifying ELF
//!   shared object (see `library`);
//! - a file's name in the cache is its DT_SONAME, or its file name if it has none;
//! - a symlink named after its target's soname (`libfoo.so.1 -> libfoo.so.1.2`), or the
//!   linker's `.so` link (`libfoo.so -> libfoo.so.1`), is an entry under its own name;
//!   any other symlink counts like the file it points to;
//! - one entry per name and directory: a file wins over a link, else the name that sorts
//!   higher (the newer version).
//!
//! One deliberate difference: ldconfig stores `DIR/SONAME` and creates that symlink when it is
//! missing (or, with `-X`, stores a path that does not exist). This module creates nothing, so
//! where the directory has no file or link of that name it stores the library's own file
//! instead, which the loader opens just the same.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::library::{self, Library};
use super::{Entry, order};

/// The entries for `dirs`, in cache order. A directory listed twice (by any path) counts once,
/// at its first place, as with ldconfig.
pub fn scan(dirs: &[PathBuf]) -> Result<Vec<Entry>, String> {
    let mut seen = HashSet::new();
    let mut entries = Vec::new();
    for dir in dirs {
        let prefix = cache_prefix(dir)?;
        let metadata = fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        if !metadata.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        if seen.insert((metadata.dev(), metadata.ino())) {
            entries.extend(scan_dir(dir, &prefix)?);
        }
    }
    order::sort(&mut entries);
    Ok(entries)
}

/// The directory as it is written into the cache's paths: absolute (the loader opens the path
/// as it stands), without trailing slashes.
fn cache_prefix(dir: &Path) -> Result<Vec<u8>, String> {
    let bytes = dir.as_os_str().as_bytes();
    if !bytes.starts_with(b"/") {
        return Err(format!("{}: a cache needs absolute directories", dir.display()));
    }
    let len = bytes.iter().rposition(|&b| b != b'/').map_or(0, |last| last + 1);
    Ok(bytes[..len].to_vec())
}

/// A library found in one directory, under the name it will have in the cache.
struct Candidate {
    soname: Vec<u8>,
    /// The file it was found as.
    file_name: Vec<u8>,
    is_link: bool,
    flags: i32,
}

/// One directory's entries, in the order ldconfig adds them to its cache (the reverse of the
/// order of discovery), which is the order that survives among names that compare equal.
fn scan_dir(dir: &Path, prefix: &[u8]) -> Result<Vec<Entry>, String> {
    let listing = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut by_soname: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut libraries = HashSet::new();
    for item in listing {
        let item = item.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let file_name = item.file_name().into_vec();
        if !is_library_name(&file_name) || is_prelink_temporary(&file_name) {
            continue;
        }
        let Ok(kind) = item.file_type() else { continue };
        if !kind.is_symlink() && !kind.is_file() {
            continue;
        }
        let Some(Library { flags, soname }) = read_library(&item.path(), kind.is_symlink()) else { continue };
        libraries.insert(file_name.clone());
        let soname = soname.unwrap_or_else(|| file_name.clone());
        let is_link = kind.is_symlink() && names_itself(&file_name, &soname);
        let soname = if is_link { file_name.clone() } else { soname };
        let found = Candidate { soname, file_name, is_link, flags };
        match by_soname.get(&found.soname) {
            Some(&index) => prefer(&mut candidates[index], found),
            None => {
                by_soname.insert(found.soname.clone(), candidates.len());
                candidates.push(found);
            }
        }
    }
    let entries = candidates.into_iter().rev().map(|candidate| {
        let target =
            if libraries.contains(&candidate.soname) { &candidate.soname } else { &candidate.file_name };
        let path = [prefix, b"/", target].concat();
        Entry {
            soname: OsString::from_vec(candidate.soname),
            path: PathBuf::from(OsString::from_vec(path)),
            flags: candidate.flags,
            hwcap: 0,
        }
    });
    Ok(entries.collect())
}

/// glibc's `_dl_is_dso`: the names ldconfig looks at.
fn is_library_name(name: &[u8]) -> bool {
    ((name.starts_with(b"lib") || name.starts_with(b"ld-")) && memchr::memmem::find(name, b".so").is_some())
        || name.starts_with(b"ld.so.")
        || name.starts_with(b"ld64.so.")
}

/// prelink's temporary files (`NAME.#prelink#` and `NAME.#prelink#.XXXXXX`), never libraries.
fn is_prelink_temporary(name: &[u8]) -> bool {
    const MARK: &[u8] = b".#prelink#";
    const SUFFIX_LEN: usize = MARK.len() + 7;
    name.ends_with(MARK)
        || (name.len() >= SUFFIX_LEN && name[name.len() - SUFFIX_LEN..].starts_with(b".#prelink#."))
}

/// Whether a symlink is an entry under its own name: it is the soname link itself, or the
/// linker's link (`libfoo.so` for a soname `libfoo.so.1`).
fn names_itself(link_name: &[u8], soname: &[u8]) -> bool {
    link_name == soname || (link_name.ends_with(b".so") && soname.starts_with(link_name))
}

/// Reads the file (through the link, for a symlink), or None if ldconfig would skip it. The
/// open never blocks (a FIFO named like a library) and a link must lead to a regular file.
fn read_library(path: &Path, is_link: bool) -> Option<Library> {
    let flags = nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY;
    let file: File = OpenOptions::new().read(true).custom_flags(flags).open(path).ok()?;
    if is_link && !file.metadata().ok()?.is_file() {
        return None;
    }
    library::read(&file)
}

/// A second library of the same name in the same directory replaces the first when it is a
/// file and the first a link, or when both are alike and its file name sorts higher.
fn prefer(kept: &mut Candidate, found: Candidate) {
    let newer = (!found.is_link && kept.is_link)
        || (found.is_link == kept.is_link && order::libcmp(&kept.file_name, &found.file_name).is_lt());
    if newer {
        kept.flags = library::flags_after_replacing(kept.flags, found.flags);
        kept.file_name = found.file_name;
        kept.is_link = found.is_link;
    }
}

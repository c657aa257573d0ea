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
//! instead, which the loader opens just the same. And one omission: ldconfig also descends
//! into hwcap subdirectories (`glibc-hwcaps/x86-64-v3`, legacy `tls`, `haswell`, ...); driver
//! directories have none, so they are not scanned.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open, openat, readlinkat};
use nix::sys::stat::Mode;

use super::library::{self, Library};
use super::{Entry, order};

/// The entries for `dirs`, in cache order. A directory listed twice (by any path) counts once,
/// at its first place, as with ldconfig. Unlike ldconfig, which skips them silently, a
/// directory that cannot be read is an error.
pub fn scan(dirs: &[PathBuf]) -> Result<Vec<Entry>, String> {
    let mut seen = HashSet::new();
    let mut files = Files::default();
    let mut entries = Vec::new();
    for dir in dirs {
        let prefix = cache_prefix(dir)?;
        let metadata = fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        if !metadata.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        if seen.insert((metadata.dev(), metadata.ino())) {
            entries.extend(scan_dir(dir, &prefix, &mut files)?);
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
fn scan_dir(dir: &Path, prefix: &[u8], files: &mut Files) -> Result<Vec<Entry>, String> {
    let (mut reader, names) = DirReader::open(dir, files)?;
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut by_soname: HashMap<Vec<u8>, usize> = HashMap::new();
    for file_name in names {
        let Some(Library { flags, soname }) = reader.library(&file_name, 0) else { continue };
        let soname = soname.unwrap_or_else(|| file_name.clone());
        let is_link = reader.is_link(&file_name) && names_itself(&file_name, &soname);
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
            if reader.is_library(&candidate.soname) { &candidate.soname } else { &candidate.file_name };
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

/// What a directory entry is, from the listing (no stat, unless the file system does not
/// say).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Link,
    Other,
}

/// A directory entry: its kind, and once looked at, the library it is or leads to (None
/// inside: ldconfig would skip it).
struct Slot {
    kind: Kind,
    library: Option<Option<Library>>,
}

/// The links the kernel follows before it gives up (ELOOP).
const MAX_LINKS: u8 = 40;

/// Reads the libraries of one directory with as few system calls as it takes, since a
/// directory may hold thousands: each file is opened by name relative to the directory and
/// read once; a link to another entry of the directory costs one readlink and shares that
/// entry's result. Other links are followed by path.
struct DirReader<'a> {
    dir: &'a Path,
    fd: OwnedFd,
    /// Every entry of the directory, by name.
    entries: HashMap<Vec<u8>, Slot>,
    files: &'a mut Files,
}

impl<'a> DirReader<'a> {
    /// Lists `dir`; also returns the names ldconfig considers, in the listing's order.
    fn open(dir: &'a Path, files: &'a mut Files) -> Result<(Self, Vec<Vec<u8>>), String> {
        let failed = |e: &dyn std::fmt::Display| format!("cannot list {}: {e}", dir.display());
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = open(dir, flags, Mode::empty()).map_err(|e| failed(&e))?;
        let (mut entries, mut names) = (HashMap::new(), Vec::new());
        for item in fs::read_dir(dir).map_err(|e| failed(&e))? {
            let item = item.map_err(|e| failed(&e))?;
            let name = item.file_name().into_vec();
            let kind = match item.file_type() {
                Ok(kind) if kind.is_file() => Kind::File,
                Ok(kind) if kind.is_symlink() => Kind::Link,
                _ => Kind::Other,
            };
            if kind != Kind::Other && is_library_name(&name) && !is_prelink_temporary(&name) {
                names.push(name.clone());
            }
            entries.insert(name, Slot { kind, library: None });
        }
        Ok((DirReader { dir, fd, entries, files }, names))
    }

    /// The library an entry is or leads to; None if ldconfig would skip it, or if there is no
    /// such entry (the target of a dangling link).
    fn library(&mut self, name: &[u8], links_followed: u8) -> Option<Library> {
        let slot = self.entries.get(name)?;
        if let Some(library) = &slot.library {
            return library.clone();
        }
        let found = match slot.kind {
            Kind::File => self.read_file(name),
            Kind::Link => self.follow(name, links_followed),
            Kind::Other => None,
        };
        if let Some(slot) = self.entries.get_mut(name) {
            slot.library = Some(found.clone());
        }
        found
    }

    fn is_link(&self, name: &[u8]) -> bool {
        self.entries.get(name).is_some_and(|slot| slot.kind == Kind::Link)
    }

    /// Whether the entry was read as a library.
    fn is_library(&self, name: &[u8]) -> bool {
        self.entries.get(name).is_some_and(|slot| matches!(slot.library, Some(Some(_))))
    }

    fn read_file(&self, name: &[u8]) -> Option<Library> {
        // Without blocking: a FIFO put in place of the file since the listing must not stall us.
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, OsStr::from_bytes(name), flags, Mode::empty()).ok()?;
        library::read(&File::from(fd))
    }

    fn follow(&mut self, name: &[u8], links_followed: u8) -> Option<Library> {
        let target = readlinkat(&self.fd, OsStr::from_bytes(name)).ok()?.into_vec();
        if target.contains(&b'/') || links_followed >= MAX_LINKS {
            return self.files.read(&self.dir.join(OsStr::from_bytes(name)));
        }
        self.library(&target, links_followed + 1)
    }
}

/// What was read from files reached by a path out of their directory, by device and inode: a
/// library that several directories link to is read once.
#[derive(Default)]
struct Files(HashMap<(u64, u64), Option<Library>>);

impl Files {
    /// The library at `path` (through links), or None if ldconfig would skip it. Only regular
    /// files are opened, without blocking, so a FIFO named like a library cannot stall a scan.
    fn read(&mut self, path: &Path) -> Option<Library> {
        let metadata = fs::metadata(path).ok().filter(|m| m.is_file())?;
        let known = self.0.entry((metadata.dev(), metadata.ino())).or_insert_with(|| {
            let flags = nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY;
            let file = OpenOptions::new().read(true).custom_flags(flags).open(path).ok()?;
            library::read(&file)
        });
        known.clone()
    }
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

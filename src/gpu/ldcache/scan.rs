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
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag, open, openat, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstatat};

use super::library::{self, Library};
use super::prefetch;
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
struct Candidate<'n> {
    soname: &'n [u8],
    /// The entry it was found as.
    entry: usize,
    is_link: bool,
    flags: i32,
}

/// One directory's entries, in the order ldconfig adds them to its cache (the reverse of the
/// order of discovery), which is the order that survives among names that compare equal.
fn scan_dir(dir: &Path, prefix: &[u8], files: &mut Files) -> Result<Vec<Entry>, String> {
    let (listing, reads) = Listing::read(dir)?;
    let mut reader = DirReader::new(&listing, files);
    reader.read_considered(reads);
    let entries = candidates(&listing, &reader).into_iter().rev().map(|candidate| {
        let target = if reader.is_library(candidate.soname) {
            candidate.soname
        } else {
            listing.names.get(candidate.entry)
        };
        let mut path = Vec::with_capacity(prefix.len() + 1 + target.len());
        path.extend_from_slice(prefix);
        path.push(b'/');
        path.extend_from_slice(target);
        Entry {
            soname: OsStr::from_bytes(candidate.soname).to_os_string(),
            path: PathBuf::from(OsString::from_vec(path)),
            flags: candidate.flags,
            hwcap: 0,
        }
    });
    Ok(entries.collect())
}

/// The libraries of a directory, one per name, in the order of discovery. Names are borrowed
/// where they lie.
fn candidates<'l>(listing: &'l Listing, reader: &'l DirReader) -> Vec<Candidate<'l>> {
    let mut candidates: Vec<Candidate> = Vec::with_capacity(listing.considered.len());
    let mut by_soname: HashMap<&[u8], usize> = HashMap::with_capacity(listing.considered.len());
    for &index in &listing.considered {
        let Some(library) = reader.library_of(index) else { continue };
        let file_name = listing.names.get(index);
        let soname = library.soname.as_deref().unwrap_or(file_name);
        let is_link = listing.kinds[index] == Kind::Link && names_itself(file_name, soname);
        let soname = if is_link { file_name } else { soname };
        let found = Candidate { soname, entry: index, is_link, flags: library.flags };
        match by_soname.get(soname) {
            Some(&kept) => prefer(&mut candidates[kept], found, &listing.names),
            None => {
                by_soname.insert(soname, candidates.len());
                candidates.push(found);
            }
        }
    }
    candidates
}

/// Whether ldconfig looks at an entry: a file or link named like a library.
fn is_considered(name: &[u8], kind: Kind) -> bool {
    kind != Kind::Other && is_library_name(name) && !is_prelink_temporary(name)
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

/// The names of a directory's entries, back to back in one buffer: a directory may hold
/// thousands, and a buffer each would cost an allocation and a free apiece.
#[derive(Default)]
struct Names {
    bytes: Vec<u8>,
    /// Where each name ends in `bytes` (it starts where the one before ends).
    ends: Vec<usize>,
}

impl Names {
    fn push(&mut self, name: &[u8]) {
        self.bytes.extend_from_slice(name);
        self.ends.push(self.bytes.len());
    }

    fn get(&self, index: usize) -> &[u8] {
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.bytes[start..self.ends[index]]
    }

    fn len(&self) -> usize {
        self.ends.len()
    }
}

/// A directory's entries as listed: names and kinds in the listing's order, and the open
/// directory that names are opened relative to.
struct Listing {
    dir: PathBuf,
    fd: OwnedFd,
    names: Names,
    kinds: Vec<Kind>,
    /// The entries ldconfig considers (files and links named like a library), in order.
    considered: Vec<usize>,
}

/// The longest name a directory entry can have (NAME_MAX), and room for its NUL.
const NAME_ROOM: usize = 256;

/// An entry ldconfig considers, on its way to be read while the listing goes on. Its name
/// travels inline, NUL-terminated, ready for `openat`: no allocation per entry.
struct Pending {
    index: usize,
    kind: Kind,
    name: [u8; NAME_ROOM],
}

impl Pending {
    /// None for a name too long to carry inline (no Linux file system lists one): the scan
    /// then reads that entry itself.
    fn new(index: usize, kind: Kind, name: &CStr) -> Option<Self> {
        let bytes = name.to_bytes_with_nul();
        let mut pending = Pending { index, kind, name: [0; NAME_ROOM] };
        pending.name.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(pending)
    }

    fn name(&self) -> &CStr {
        // Invariant: `new` copied a NUL-terminated name into a zeroed buffer.
        CStr::from_bytes_until_nul(&self.name).unwrap_or_default()
    }
}

impl Listing {
    /// Lists `dir`; the entries ldconfig considers are read meanwhile, on several threads
    /// where there are enough of them to repay starting one. Returns the listing and those
    /// reads, by the entry's place in the listing.
    fn read(dir: &Path) -> Result<(Self, Vec<(usize, Read)>), String> {
        let failed = |e: &dyn std::fmt::Display| format!("cannot list {}: {e}", dir.display());
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = open(dir, flags, Mode::empty()).map_err(|e| failed(&e))?;
        // Listed through a second descriptor on this thread (a stream is not Sync); the first
        // is shared with the threads that read.
        let copy = fd.try_clone().map_err(|e| failed(&e))?;
        let mut stream = Dir::from_fd(copy).map_err(|e| failed(&e))?;
        let (mut names, mut kinds, mut considered) = (Names::default(), Vec::new(), Vec::new());
        let (listed, reads) = prefetch::while_finding(
            |found| {
                for item in stream.iter() {
                    let item = item?;
                    let name = item.file_name();
                    let bytes = name.to_bytes();
                    if bytes == b"." || bytes == b".." {
                        continue;
                    }
                    let (index, kind) = (names.len(), kind(fd.as_fd(), bytes, item.file_type()));
                    if is_considered(bytes, kind) {
                        considered.push(index);
                        if let Some(pending) = Pending::new(index, kind, name) {
                            found(pending);
                        }
                    }
                    names.push(bytes);
                    kinds.push(kind);
                }
                Ok(())
            },
            |pending| (pending.index, read_entry(fd.as_fd(), pending.name(), pending.kind)),
        );
        listed.map_err(|e: nix::Error| failed(&e))?;
        Ok((Listing { dir: dir.to_path_buf(), fd, names, kinds, considered }, reads))
    }
}

/// The kind of an entry: as listed, or where the file system leaves that out, by `lstat`.
fn kind(dir: BorrowedFd, name: &[u8], listed: Option<Type>) -> Kind {
    let listed = listed.or_else(|| {
        let stat = fstatat(dir, OsStr::from_bytes(name), AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
        match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => Some(Type::File),
            SFlag::S_IFLNK => Some(Type::Symlink),
            _ => None,
        }
    });
    match listed {
        Some(Type::File) => Kind::File,
        Some(Type::Symlink) => Kind::Link,
        _ => Kind::Other,
    }
}

/// The links the kernel follows before it gives up (ELOOP).
const MAX_LINKS: u8 = 40;

/// What an entry was found to be, once looked at.
#[derive(Clone, Copy)]
enum Looked {
    NotYet,
    /// ldconfig would skip it.
    Skipped,
    /// The library at this place of [`DirReader::libraries`].
    Library(usize),
}

/// Reads the libraries of one directory with as few system calls as it takes, since a
/// directory may hold thousands: each file is opened by name relative to the directory and
/// read once; a link to another entry of the directory costs one readlink and shares that
/// entry's result (by place, never by copy). Other links are followed by path.
struct DirReader<'l, 'f> {
    listing: &'l Listing,
    /// Where each name is in the listing.
    positions: HashMap<&'l [u8], usize>,
    /// Each link's target, once read (None inside: unreadable).
    targets: Vec<Option<Option<Vec<u8>>>>,
    /// What each entry is or leads to.
    looked: Vec<Looked>,
    /// The libraries read, each once.
    libraries: Vec<Library>,
    files: &'f mut Files,
}

impl<'l, 'f> DirReader<'l, 'f> {
    fn new(listing: &'l Listing, files: &'f mut Files) -> Self {
        let count = listing.names.len();
        let positions = (0..count).map(|index| (listing.names.get(index), index));
        DirReader {
            listing,
            positions: positions.collect(),
            targets: vec![None; count],
            looked: vec![Looked::NotYet; count],
            libraries: Vec::with_capacity(listing.considered.len()),
            files,
        }
    }

    /// Takes what was read ahead (see [`Listing::read`]), then looks at every entry ldconfig
    /// considers, following links and reading what was not read ahead.
    fn read_considered(&mut self, reads: Vec<(usize, Read)>) {
        for (index, read) in reads {
            match read {
                Read::Library(library) => self.looked[index] = self.keep(library),
                Read::Target(target) => self.targets[index] = Some(target),
            }
        }
        for &index in &self.listing.considered {
            self.look(index, 0);
        }
    }

    /// Keeps a library read (if any) and says where it went.
    fn keep(&mut self, library: Option<Library>) -> Looked {
        match library {
            Some(library) => {
                self.libraries.push(library);
                Looked::Library(self.libraries.len() - 1)
            }
            None => Looked::Skipped,
        }
    }

    /// What entry `index` is or leads to, looking at it if that was not done yet.
    fn look(&mut self, index: usize, links_followed: u8) -> Looked {
        if !matches!(self.looked[index], Looked::NotYet) {
            return self.looked[index];
        }
        let looked = match self.listing.kinds[index] {
            Kind::File => {
                let name = CString::new(self.listing.names.get(index)).ok();
                let library = name.and_then(|name| read_file(self.listing.fd.as_fd(), &name));
                self.keep(library)
            }
            Kind::Link => self.follow(index, links_followed),
            Kind::Other => Looked::Skipped,
        };
        self.looked[index] = looked;
        looked
    }

    /// The library entry `index` is or leads to, once looked at; None if ldconfig skips it.
    fn library_of(&self, index: usize) -> Option<&Library> {
        match self.looked.get(index)? {
            Looked::Library(at) => self.libraries.get(*at),
            Looked::NotYet | Looked::Skipped => None,
        }
    }

    /// Whether the entry of this name was read as a library.
    fn is_library(&self, name: &[u8]) -> bool {
        self.positions.get(name).is_some_and(|&index| self.library_of(index).is_some())
    }

    fn follow(&mut self, index: usize, links_followed: u8) -> Looked {
        let listing = self.listing;
        let name = listing.names.get(index);
        let target = self.targets[index].get_or_insert_with(|| read_link(listing.fd.as_fd(), name));
        let Some(target) = target.as_deref() else { return Looked::Skipped };
        if target.contains(&b'/') || links_followed >= MAX_LINKS {
            let library = self.files.read(&listing.dir.join(OsStr::from_bytes(name)));
            return self.keep(library);
        }
        // A target that is not in the listing: a dangling link.
        match self.positions.get(target) {
            Some(&next) => self.look(next, links_followed + 1),
            None => Looked::Skipped,
        }
    }
}

/// What was read ahead of an entry: a file's library, or a link's target.
enum Read {
    Library(Option<Library>),
    Target(Option<Vec<u8>>),
}

fn read_entry(dir: BorrowedFd, name: &CStr, kind: Kind) -> Read {
    match kind {
        Kind::File => Read::Library(read_file(dir, name)),
        Kind::Link => Read::Target(read_link(dir, name.to_bytes())),
        Kind::Other => Read::Library(None),
    }
}

fn read_file(dir: BorrowedFd, name: &CStr) -> Option<Library> {
    // Without blocking: a FIFO put in place of the file since the listing must not stall us.
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty()).ok()?;
    library::read(&File::from(fd))
}

fn read_link(dir: BorrowedFd, name: &[u8]) -> Option<Vec<u8>> {
    readlinkat(dir, OsStr::from_bytes(name)).ok().map(OsStringExt::into_vec)
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
fn prefer<'n>(kept: &mut Candidate<'n>, found: Candidate<'n>, names: &Names) {
    let newer = (!found.is_link && kept.is_link)
        || (found.is_link == kept.is_link
            && order::libcmp(names.get(kept.entry), names.get(found.entry)).is_lt());
    if newer {
        kept.flags = library::flags_after_replacing(kept.flags, found.flags);
        kept.entry = found.entry;
        kept.is_link = found.is_link;
    }
}

//! What ldconfig reads from a shared library: whether it qualifies, its cache flags, and its
//! DT_SONAME. The file is read with positioned reads of what is needed, starting with its first
//! page (the ELF and program headers, often the names too), not whole: NVIDIA's libcuda alone
//! is 30 MB, and a mapping would turn a file truncated underneath us into a SIGBUS in PID 1.

use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;

use goblin::elf::dynamic::{DT_NEEDED, DT_NULL, DT_SONAME, DT_STRTAB};
use goblin::elf::header::{
    EI_CLASS, EI_DATA, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, EM_386, EM_X86_64, ET_DYN,
};
use goblin::elf::program_header::{PT_DYNAMIC, PT_INTERP, PT_LOAD};

/// Flags of an x86-64 library (`FLAG_X8664_LIB64 | FLAG_ELF_LIBC6`): the only value the
/// x86-64 loader accepts.
pub const FLAGS_X86_64: i32 = 0x0303;
/// Flags of an x32 library (`FLAG_X8664_LIBX32 | FLAG_ELF_LIBC6`).
const FLAGS_X32: i32 = 0x0803;
/// An i386 library that does not say which libc it is for (`FLAG_ELF`).
const FLAG_ELF: i32 = 0x0001;
/// An i386 library for glibc (`FLAG_ELF_LIBC6`): it names a glibc interpreter or needs
/// libc.so.6 or libm.so.6.
const FLAG_ELF_LIBC6: i32 = 0x0003;
/// The interpreters and libraries that mark a library as glibc's, as the x86-64 ldconfig knows
/// them.
const GLIBC_INTERPRETERS: [&[u8]; 4] = [
    b"/lib/ld-linux-x86-64.so.2",
    b"/lib/ld-linux.so.2",
    b"/libx32/ld-linux-x32.so.2",
    b"/lib64/ld-linux-x86-64.so.2",
];
const GLIBC_LIBRARIES: [&[u8]; 2] = [b"libc.so.6", b"libm.so.6"];

/// glibc's ldconfig skips files smaller than an ELF64 header, even 32-bit ones.
const MIN_FILE_LEN: usize = 64;
/// The first read: the ELF and program headers, and whatever else of the file fits.
const HEAD_LEN: usize = 4 * 1024;
/// Dynamic segments are a few hundred bytes; this bounds what a hostile file can make us read.
const MAX_DYNAMIC_LEN: u64 = 1 << 20;
/// Longest name read (a soname, a DT_NEEDED name or an interpreter path).
const MAX_NAME_LEN: usize = 4096;
/// Names are read in chunks of this size until their NUL.
const NAME_CHUNK: usize = 256;
/// Stack room for a table read outside the first read: a dynamic section of up to 128 entries
/// (a few dozen is usual), a program header table of up to 36.
const SPARE_LEN: usize = 2 * 1024;

/// A file ldconfig would put in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    pub flags: i32,
    /// DT_SONAME; None for a library without one (ldconfig then uses its file name).
    pub soname: Option<Vec<u8>>,
}

/// Reads `file` as ldconfig does; None where ldconfig skips the file: not ELF (a linker script
/// such as libc.so, say), not a shared object, not for x86-64, x32 or i386, no dynamic
/// segment or string table, or offsets pointing outside the file.
///
/// A scan calls this for every library of a directory, so it allocates nothing but the soname:
/// the headers are read from the first read, or into buffers on the stack.
pub fn read(file: &File) -> Option<Library> {
    let mut buffer = [0; HEAD_LEN];
    let reader = Reader::new(file, &mut buffer)?;
    let head = reader.head;
    if head.len() < MIN_FILE_LEN || !head.starts_with(b"\x7fELF") || head[EI_DATA] != ELFDATA2LSB {
        return None;
    }
    let class = Class::of(head[EI_CLASS])?;
    let header = class.header(head)?;
    if header.kind != ET_DYN {
        return None;
    }
    let machine_flags = match (header.machine, class) {
        (EM_X86_64, Class::Elf64) => Some(FLAGS_X86_64),
        (EM_X86_64, Class::Elf32) => Some(FLAGS_X32),
        (EM_386, Class::Elf32) => None,
        _ => return None,
    };
    let mut spare = [0; SPARE_LEN];
    let segments = Segments::read(&reader, &header, class, &mut spare)?;
    // Like ldconfig, the last PT_DYNAMIC counts, and an empty one means no dynamic section.
    let dynamic = segments.iter().filter(|s| s.kind == PT_DYNAMIC).last().filter(|s| s.filesz > 0)?;
    let mut spare = [0; SPARE_LEN];
    let table = dynamic_table(&reader, &dynamic, &mut spare)?;
    let entries = || dynamic_entries(&table, class);
    let strtab_address = entries().find(|e| e.tag == DT_STRTAB)?.value;
    let strtab = segments.file_offset(strtab_address);
    let soname = match entries().find(|e| e.tag == DT_SONAME) {
        Some(entry) => Some(read_name(&reader, strtab.wrapping_add(entry.value))?),
        None => None,
    };
    let flags = match machine_flags {
        Some(flags) => flags,
        None => i386_flags(&reader, &segments, entries(), strtab)?,
    };
    Some(Library { flags, soname })
}

/// The flags of a name's entry when a second file of that name replaces the first in one
/// directory: ldconfig keeps the first file's flags (and warns), except between plain ELF and
/// glibc i386, where it takes the second file's.
pub fn flags_after_replacing(kept: i32, found: i32) -> i32 {
    match (kept, found) {
        (FLAG_ELF, FLAG_ELF_LIBC6) | (FLAG_ELF_LIBC6, FLAG_ELF) => found,
        _ => kept,
    }
}

/// The fields of the ELF header that ldconfig looks at.
struct Header {
    kind: u16,
    machine: u16,
    phoff: u64,
    phnum: u16,
}

/// The fields of a program header that ldconfig looks at.
#[derive(Clone, Copy)]
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// A dynamic entry.
struct Dynamic {
    tag: u64,
    value: u64,
}

/// The layout of the records read here in a 32-bit or a 64-bit file. Only the fields used are
/// read, straight from the bytes: goblin's generic record readers (a call per field) made up
/// about a seventh of a scan's time in user space (perf, a directory of 1,000 libraries).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Elf32,
    Elf64,
}

impl Class {
    /// The class of `EI_CLASS`; None for anything else, which ldconfig skips.
    fn of(class: u8) -> Option<Self> {
        match class {
            ELFCLASS64 => Some(Class::Elf64),
            ELFCLASS32 => Some(Class::Elf32),
            _ => None,
        }
    }

    /// A 32-bit field of a 32-bit file or a 64-bit one of a 64-bit file, at `at` in `bytes`.
    fn word(self, bytes: &[u8], at: usize) -> Option<u64> {
        match self {
            Class::Elf32 => u32_at(bytes, at).map(u64::from),
            Class::Elf64 => Some(u64::from_le_bytes(bytes.get(at..at.checked_add(8)?)?.try_into().ok()?)),
        }
    }

    /// `Elf32_Ehdr` or `Elf64_Ehdr` (the caller checked that `bytes` holds an ELF64 header's
    /// length, which covers either).
    fn header(self, bytes: &[u8]) -> Option<Header> {
        let (phoff, phnum) = match self {
            Class::Elf32 => (28, 44),
            Class::Elf64 => (32, 56),
        };
        Some(Header {
            kind: u16_at(bytes, 16)?,
            machine: u16_at(bytes, 18)?,
            phoff: self.word(bytes, phoff)?,
            phnum: u16_at(bytes, phnum)?,
        })
    }

    fn program_header_len(self) -> usize {
        match self {
            Class::Elf32 => 32,
            Class::Elf64 => 56,
        }
    }

    /// `Elf32_Phdr` or `Elf64_Phdr`.
    fn segment(self, bytes: &[u8]) -> Option<Segment> {
        let (offset, vaddr, filesz) = match self {
            Class::Elf32 => (4, 8, 16),
            Class::Elf64 => (8, 16, 32),
        };
        Some(Segment {
            kind: u32_at(bytes, 0)?,
            offset: self.word(bytes, offset)?,
            vaddr: self.word(bytes, vaddr)?,
            filesz: self.word(bytes, filesz)?,
        })
    }

    fn dynamic_len(self) -> usize {
        match self {
            Class::Elf32 => 8,
            Class::Elf64 => 16,
        }
    }

    /// `Elf32_Dyn` or `Elf64_Dyn`.
    fn dynamic(self, bytes: &[u8]) -> Option<Dynamic> {
        let half = self.dynamic_len() / 2;
        Some(Dynamic { tag: self.word(bytes, 0)?, value: self.word(bytes, half)? })
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// The program header table, read where it lies (nearly always inside the first read).
struct Segments<'r> {
    table: Cow<'r, [u8]>,
    class: Class,
}

impl<'r> Segments<'r> {
    /// None if the table does not fit in the file.
    fn read(reader: &'r Reader, header: &Header, class: Class, spare: &'r mut [u8]) -> Option<Self> {
        let size = usize::from(header.phnum).checked_mul(class.program_header_len())?;
        let table = reader.bytes(header.phoff, size, spare)?;
        (table.len() == size).then_some(Segments { table, class })
    }

    fn iter(&self) -> impl Iterator<Item = Segment> + '_ {
        let len = self.class.program_header_len();
        self.table.chunks_exact(len).filter_map(|record| self.class.segment(record))
    }

    /// The file offset of a virtual address, by the first PT_LOAD whose file contents hold
    /// it; an address no segment holds is taken as an offset, as ldconfig does.
    fn file_offset(&self, address: u64) -> u64 {
        self.iter()
            .find(|s| s.kind == PT_LOAD && address >= s.vaddr && address - s.vaddr < s.filesz)
            .map_or(address, |s| (address - s.vaddr).wrapping_add(s.offset))
    }
}

/// The bytes of the dynamic segment (fewer where the file ends first).
fn dynamic_table<'r>(reader: &'r Reader, dynamic: &Segment, spare: &'r mut [u8]) -> Option<Cow<'r, [u8]>> {
    let len = usize::try_from(dynamic.filesz.min(MAX_DYNAMIC_LEN)).ok()?;
    reader.bytes(dynamic.offset, len, spare)
}

/// The dynamic entries of `table` up to DT_NULL (or its end).
fn dynamic_entries(table: &[u8], class: Class) -> impl Iterator<Item = Dynamic> {
    let records = table.chunks_exact(class.dynamic_len()).filter_map(move |record| class.dynamic(record));
    records.take_while(|entry| entry.tag != DT_NULL)
}

/// An i386 library is glibc's if it names a glibc interpreter or needs libc or libm; otherwise
/// it is plain ELF.
fn i386_flags(
    reader: &Reader,
    segments: &Segments,
    entries: impl Iterator<Item = Dynamic>,
    strtab: u64,
) -> Option<i32> {
    for segment in segments.iter().filter(|s| s.kind == PT_INTERP) {
        if GLIBC_INTERPRETERS.contains(&read_name(reader, segment.offset)?.as_slice()) {
            return Some(FLAG_ELF_LIBC6);
        }
    }
    for entry in entries.filter(|e| e.tag == DT_NEEDED) {
        if GLIBC_LIBRARIES.contains(&read_name(reader, strtab.wrapping_add(entry.value))?.as_slice()) {
            return Some(FLAG_ELF_LIBC6);
        }
    }
    Some(FLAG_ELF)
}

/// The NUL-terminated name at `offset`; None if the file ends first or it is too long.
fn read_name(reader: &Reader, offset: u64) -> Option<Vec<u8>> {
    let head = reader.head_from(offset);
    if let Some(end) = memchr::memchr(0, head) {
        return Some(head[..end].to_vec());
    }
    let mut name = Vec::new();
    let mut chunk = [0; NAME_CHUNK];
    while name.len() < MAX_NAME_LEN {
        let read = reader.bytes(offset.checked_add(name.len() as u64)?, NAME_CHUNK, &mut chunk)?;
        if let Some(end) = memchr::memchr(0, &read) {
            name.extend_from_slice(&read[..end]);
            return Some(name);
        }
        if read.len() < NAME_CHUNK {
            return None;
        }
        name.extend_from_slice(&read);
    }
    None
}

/// A file and the bytes of its first read, up to `HEAD_LEN`.
struct Reader<'a> {
    file: &'a File,
    head: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Makes the first read into `buffer` (the caller's: on the stack, since a scan makes one
    /// per library and a heap block of this size is slow to take and give back).
    fn new(file: &'a File, buffer: &'a mut [u8; HEAD_LEN]) -> Option<Self> {
        let len = read_at_most(file, 0, buffer)?;
        Some(Reader { file, head: buffer.get(..len)? })
    }

    /// Up to `len` bytes at `offset` (fewer only at the end of the file): from the first read
    /// when it holds them, else read now, into `spare` when they fit there (a caller's buffer
    /// on the stack), else into a new one. None on a read error.
    fn bytes<'b>(&'b self, offset: u64, len: usize, spare: &'b mut [u8]) -> Option<Cow<'b, [u8]>> {
        let range = usize::try_from(offset).ok().and_then(|start| Some(start..start.checked_add(len)?));
        if let Some(bytes) = range.and_then(|range| self.head.get(range)) {
            return Some(Cow::Borrowed(bytes));
        }
        match spare.get_mut(..len) {
            Some(buffer) => {
                let filled = read_at_most(self.file, offset, buffer)?;
                Some(Cow::Borrowed(&buffer[..filled]))
            }
            None => {
                let mut buffer = vec![0; len];
                let filled = read_at_most(self.file, offset, &mut buffer)?;
                buffer.truncate(filled);
                Some(Cow::Owned(buffer))
            }
        }
    }

    /// What the first read holds from `offset` on.
    fn head_from(&self, offset: u64) -> &[u8] {
        usize::try_from(offset).ok().and_then(|start| self.head.get(start..)).unwrap_or_default()
    }
}

/// Fills `buffer` from `offset` on, as far as the file goes; returns how much it filled. None
/// on a read error.
fn read_at_most(file: &File, offset: u64, buffer: &mut [u8]) -> Option<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], offset.checked_add(filled as u64)?) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(filled)
}

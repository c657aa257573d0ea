//! Reading what the rewrite needs from an ELF file: the headers and a few small tables, each
//! range checked against the file's size before it is read. A file is read piece by piece
//! through [`Source`], so a rewrite touches kilobytes, not the whole binary.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use goblin::elf::dynamic::{
    DT_AUDIT, DT_CONFIG, DT_DEPAUDIT, DT_NEEDED, DT_NULL, DT_RPATH, DT_RUNPATH, DT_SONAME, DT_STRSZ,
    DT_STRTAB, DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM,
};
use goblin::elf::header::{
    EI_CLASS, EI_DATA, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFDATA2MSB, ELFMAG, ET_DYN, ET_EXEC,
};
use goblin::elf::note::NT_GNU_PROPERTY_TYPE_0;
use goblin::elf::program_header::{PT_DYNAMIC, PT_INTERP, PT_LOAD, PT_NULL, pt_to_str};
use goblin::elf::section_header::{SHT_DYNSYM, SHT_NOBITS, SHT_NULL};
use goblin::elf64::dynamic::{Dyn, SIZEOF_DYN};
use goblin::elf64::header::{Header, SIZEOF_EHDR};
use goblin::elf64::program_header::{ProgramHeader, SIZEOF_PHDR};
use goblin::elf64::section_header::{SIZEOF_SHDR, SectionHeader};
use scroll::{LE, Pread};

use super::Result;

/// Filter and auxiliary-library tags (string-valued), missing from goblin's constants.
const DT_AUXILIARY: u64 = 0x7fff_fffd;
const DT_FILTER: u64 = 0x7fff_ffff;
/// Dynamic tags whose value is an offset into the dynamic string table.
const STRING_TAGS: [u64; 9] =
    [DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH, DT_AUXILIARY, DT_FILTER, DT_CONFIG, DT_DEPAUDIT, DT_AUDIT];
/// Size of one `Elf64_Sym`; its first field is the name's string offset.
const SIZEOF_SYM: usize = 24;
/// The most read at once: far more than any header or table of a real binary, and a bound on
/// what a hostile file (a sparse one claiming terabytes) can make the init allocate.
const MAX_READ: u64 = 64 << 20;

/// Random access to the bytes of an ELF file.
pub(super) trait Source {
    /// The size of the file in bytes.
    fn size(&self) -> u64;
    /// Fills `buffer` with the bytes at `offset`.
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()>;
}

impl Source for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).ok();
        let bytes = start.and_then(|start| self.get(start..start.checked_add(buffer.len())?));
        buffer.copy_from_slice(bytes.ok_or(io::ErrorKind::UnexpectedEof)?);
        Ok(())
    }
}

/// How much of a file's start is read at once: the ELF header, the program headers, the
/// interpreter path and the notes of a linker's output all lie there, and each would
/// otherwise be a read of its own.
const HEAD_LEN: usize = 4 * 1024;

/// An open file, read with `pread`, its first [`HEAD_LEN`] bytes once. (Not `mmap`: a file
/// truncated under a mapping raises SIGBUS, which would kill PID 1.)
pub(super) struct FileSource<'f> {
    file: &'f File,
    size: u64,
    head: Vec<u8>,
}

impl<'f> FileSource<'f> {
    /// `file`, which is `size` bytes long.
    pub fn new(file: &'f File, size: u64) -> io::Result<Self> {
        let mut head = vec![0; size.min(HEAD_LEN as u64) as usize]; // At most HEAD_LEN.
        FileExt::read_exact_at(file, &mut head, 0)?;
        Ok(FileSource { file, size, head })
    }
}

impl Source for FileSource<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).ok();
        match start.and_then(|start| self.head.get(start..start.checked_add(buffer.len())?)) {
            Some(bytes) => {
                buffer.copy_from_slice(bytes);
                Ok(())
            }
            None => FileExt::read_exact_at(self.file, buffer, offset),
        }
    }
}

/// Whether `offset..offset + size` lies inside a file of `file_size` bytes.
pub(super) fn in_file(offset: u64, size: u64, file_size: u64) -> bool {
    offset.checked_add(size).is_some_and(|end| end <= file_size)
}

/// A 64-bit little-endian ELF executable or shared object whose headers were checked against
/// its size.
pub(super) struct Image<'s> {
    source: &'s dyn Source,
    pub header: Header,
    pub segments: Vec<ProgramHeader>,
    pub sections: Vec<SectionHeader>,
}

/// The dynamic section: all of `PT_DYNAMIC`'s slots, including spare ones after the terminator.
#[derive(Clone)]
pub(super) struct Dynamic {
    pub offset: u64,
    pub entries: Vec<Dyn>,
    /// Index of the first `DT_NULL`, which ends the used entries.
    pub terminator: usize,
}

/// The dynamic string table: where it is and what it holds.
pub(super) struct Strings {
    pub vaddr: u64,
    pub offset: u64,
    pub table: Vec<u8>,
}

/// Where the string offsets are in a symbol version table (`Elf64_Verneed` with its
/// `Elf64_Vernaux` records, or `Elf64_Verdef` with its `Elf64_Verdaux` records): byte
/// positions of the fields within a record.
struct VersionTable {
    address_tag: u64,
    count_tag: u64,
    /// The library file name (needs only).
    file_name_at: Option<u64>,
    aux_count_at: u64,
    aux_at: u64,
    next_at: u64,
    aux_name_at: u64,
    aux_next_at: u64,
}

const VERSION_NEEDS: VersionTable = VersionTable {
    address_tag: DT_VERNEED,
    count_tag: DT_VERNEEDNUM,
    file_name_at: Some(4),
    aux_count_at: 2,
    aux_at: 8,
    next_at: 12,
    aux_name_at: 8,
    aux_next_at: 12,
};

const VERSION_DEFINITIONS: VersionTable = VersionTable {
    address_tag: DT_VERDEF,
    count_tag: DT_VERDEFNUM,
    file_name_at: None,
    aux_count_at: 6,
    aux_at: 12,
    next_at: 16,
    aux_name_at: 0,
    aux_next_at: 4,
};

impl<'s> Image<'s> {
    pub fn parse(source: &'s dyn Source) -> Result<Self> {
        let mut ident = [0u8; EI_DATA + 1];
        // A file shorter than that leaves zeros, which fail the checks below.
        let available = source.size().min(ident.len() as u64) as usize;
        source
            .read_exact_at(&mut ident[..available], 0)
            .map_err(|e| format!("cannot read the ELF header: {e}"))?;
        if ident[..ELFMAG.len()] != ELFMAG[..] {
            return Err("not an ELF file (it does not start with \\x7fELF)".into());
        }
        match ident[EI_CLASS] {
            ELFCLASS64 => {}
            ELFCLASS32 => return Err("a 32-bit ELF file: only 64-bit executables are supported".into()),
            _ => return Err("truncated ELF header or unknown ELF class".into()),
        }
        match ident[EI_DATA] {
            ELFDATA2LSB => {}
            ELFDATA2MSB => {
                return Err("a big-endian ELF file: only little-endian executables are supported".into());
            }
            _ => return Err("truncated ELF header or unknown ELF data encoding".into()),
        }
        let header: Header = read(source, 0, SIZEOF_EHDR as u64, "ELF header")?
            .pread_with(0, LE)
            .map_err(|_| "truncated ELF header")?;
        if header.e_type != ET_EXEC && header.e_type != ET_DYN {
            return Err(format!("not an executable or shared object (ELF type {})", header.e_type));
        }
        if usize::from(header.e_phentsize) != SIZEOF_PHDR {
            return Err(format!("inconsistent ELF header: program header size {}", header.e_phentsize));
        }
        if header.e_phnum == u16::MAX {
            return Err("extended program header numbering (PN_XNUM) is not supported".into());
        }
        let segments =
            read_table(source, header.e_phoff, header.e_phnum.into(), SIZEOF_PHDR, "program header table")?;
        let sections = read_sections(source, &header)?;
        let image = Image { source, header, segments, sections };
        image.check_ranges()?;
        Ok(image)
    }

    pub fn size(&self) -> u64 {
        self.source.size()
    }

    /// Every segment and section with contents lies inside the file; load segments are sane.
    fn check_ranges(&self) -> Result<()> {
        let size = self.size();
        for (index, segment) in self.segments.iter().enumerate() {
            let kind = pt_to_str(segment.p_type);
            if segment.p_type != PT_NULL && !in_file(segment.p_offset, segment.p_filesz, size) {
                return Err(format!(
                    "segment {index} ({kind}) extends past the end of the file (truncated?)"
                ));
            }
            if segment.p_type == PT_LOAD {
                if segment.p_memsz < segment.p_filesz {
                    return Err(format!(
                        "inconsistent segment {index} ({kind}): smaller in memory than in the file"
                    ));
                }
                if segment.p_align > 1 && !segment.p_align.is_power_of_two() {
                    return Err(format!(
                        "inconsistent segment {index} ({kind}): alignment {:#x}",
                        segment.p_align
                    ));
                }
                if segment.p_vaddr.checked_add(segment.p_memsz).is_none() {
                    return Err(format!(
                        "inconsistent segment {index} ({kind}): ends past the address space"
                    ));
                }
            }
        }
        for (index, section) in self.sections.iter().enumerate() {
            let has_contents = section.sh_type != SHT_NOBITS && section.sh_type != SHT_NULL;
            if has_contents && !in_file(section.sh_offset, section.sh_size, size) {
                return Err(format!("section {index} extends past the end of the file (truncated?)"));
            }
        }
        Ok(())
    }

    fn read(&self, offset: u64, size: u64, what: &str) -> Result<Vec<u8>> {
        read(self.source, offset, size, what)
    }

    /// The only segment of type `kind`, if any; two of them make the file inconsistent.
    pub fn only_segment(&self, kind: u32) -> Result<Option<&ProgramHeader>> {
        let mut found = self.segments.iter().filter(|segment| segment.p_type == kind);
        match (found.next(), found.next()) {
            (Some(_), Some(_)) => Err(format!("more than one {} segment", pt_to_str(kind))),
            (first, _) => Ok(first),
        }
    }

    /// The interpreter path (without its NUL); `None` for a static file.
    pub fn interpreter(&self) -> Result<Option<Vec<u8>>> {
        let Some(segment) = self.only_segment(PT_INTERP)? else { return Ok(None) };
        let mut path = self.read(segment.p_offset, segment.p_filesz, "PT_INTERP segment")?;
        let end =
            path.iter().position(|&byte| byte == 0).ok_or("the PT_INTERP segment is not NUL-terminated")?;
        path.truncate(end);
        Ok(Some(path))
    }

    pub fn dynamic(&self) -> Result<Option<Dynamic>> {
        let Some(segment) = self.only_segment(PT_DYNAMIC)? else { return Ok(None) };
        let count = usize::try_from(segment.p_filesz).unwrap_or(usize::MAX) / SIZEOF_DYN;
        let entries: Vec<Dyn> =
            read_table(self.source, segment.p_offset, count, SIZEOF_DYN, "dynamic section")?;
        let terminator = entries
            .iter()
            .position(|entry| entry.d_tag == DT_NULL)
            .ok_or("the dynamic section has no DT_NULL terminator")?;
        Ok(Some(Dynamic { offset: segment.p_offset, entries, terminator }))
    }

    /// The file offset of the `size` bytes at address `vaddr`, if a `PT_LOAD` maps them from the file.
    fn offset_of(&self, vaddr: u64, size: u64) -> Option<u64> {
        self.segments.iter().filter(|segment| segment.p_type == PT_LOAD).find_map(|segment| {
            let delta = vaddr.checked_sub(segment.p_vaddr)?;
            (delta.checked_add(size)? <= segment.p_filesz).then(|| segment.p_offset.checked_add(delta))?
        })
    }

    pub fn strings(&self, dynamic: &Dynamic) -> Result<Strings> {
        let vaddr = dynamic.value(DT_STRTAB).ok_or("the dynamic section has no DT_STRTAB")?;
        let size = dynamic.value(DT_STRSZ).ok_or("the dynamic section has no DT_STRSZ")?;
        let offset = self
            .offset_of(vaddr, size)
            .ok_or("the dynamic string table is not in a loaded part of the file")?;
        let table = self.read(offset, size, "dynamic string table")?;
        Ok(Strings { vaddr, offset, table })
    }

    /// The current `DT_RUNPATH`, if any.
    pub fn runpath(&self, dynamic: &Dynamic) -> Result<Option<Vec<u8>>> {
        let Some(index) = dynamic.value(DT_RUNPATH) else { return Ok(None) };
        self.strings(dynamic)?.at(index).map(|path| Some(path.to_vec()))
    }

    /// Every offset into the dynamic string table that something refers to, except from
    /// dynamic entry `except`: the string-valued dynamic entries, the symbol names of
    /// `.dynsym` and the version names. `None` when they cannot all be found (no section
    /// headers to find `.dynsym` by, or version tables outside the file).
    pub fn string_references(&self, dynamic: &Dynamic, except: usize) -> Option<Vec<u64>> {
        let mut references: Vec<u64> = dynamic
            .used()
            .iter()
            .enumerate()
            .filter(|(index, entry)| *index != except && STRING_TAGS.contains(&entry.d_tag))
            .map(|(_, entry)| entry.d_val)
            .collect();
        let symbols = self.sections.iter().find(|section| section.sh_type == SHT_DYNSYM)?;
        let symbols = self.read(symbols.sh_offset, symbols.sh_size, ".dynsym").ok()?;
        for symbol in symbols.chunks_exact(SIZEOF_SYM) {
            references.push(symbol.pread_with::<u32>(0, LE).ok()?.into());
        }
        self.version_references(dynamic, &mut references)?;
        Some(references)
    }

    /// Adds the file and version names of `DT_VERNEED` and the names of `DT_VERDEF`.
    fn version_references(&self, dynamic: &Dynamic, references: &mut Vec<u64>) -> Option<()> {
        // Each record is at least 8 bytes: more records than that is a loop, not a table.
        let mut budget = self.size() / 8;
        let u16_at = |offset: u64| self.read(offset, 2, "").ok()?.pread_with::<u16>(0, LE).ok();
        let u32_at =
            |offset: u64| self.read(offset, 4, "").ok()?.pread_with::<u32>(0, LE).ok().map(u64::from);
        for table in [VERSION_NEEDS, VERSION_DEFINITIONS] {
            let Some(vaddr) = dynamic.value(table.address_tag) else { continue };
            let records = dynamic.value(table.count_tag)?;
            let mut record = self.offset_of(vaddr, 1)?;
            for _ in 0..records {
                budget = budget.checked_sub(1)?;
                if let Some(file_at) = table.file_name_at {
                    references.push(u32_at(record.checked_add(file_at)?)?);
                }
                let aux_count = u16_at(record.checked_add(table.aux_count_at)?)?;
                let mut aux = record.checked_add(u32_at(record.checked_add(table.aux_at)?)?)?;
                for _ in 0..aux_count {
                    budget = budget.checked_sub(1)?;
                    references.push(u32_at(aux.checked_add(table.aux_name_at)?)?);
                    aux = aux.checked_add(u32_at(aux.checked_add(table.aux_next_at)?)?)?;
                }
                record = record.checked_add(u32_at(record.checked_add(table.next_at)?)?)?;
            }
        }
        Some(())
    }

    /// Whether a note segment carries a GNU property note (x86 CET/IBT, arm64 BTI), which the
    /// loader reads from `PT_NOTE` when there is no `PT_GNU_PROPERTY`. Unreadable notes count
    /// as carrying one: such a segment is not taken.
    pub fn has_property_note(&self, segment: &ProgramHeader) -> bool {
        let Ok(notes) = self.read(segment.p_offset, segment.p_filesz, "PT_NOTE segment") else { return true };
        let align = if segment.p_align == 8 { 8 } else { 4 };
        let mut notes = &notes[..];
        while !notes.is_empty() {
            let field =
                |at: usize| notes.pread_with::<u32>(at, LE).ok().and_then(|v| usize::try_from(v).ok());
            let (Some(name_size), Some(desc_size), Some(kind)) = (field(0), field(4), field(8)) else {
                return true;
            };
            let name_end = name_size.checked_add(12);
            let desc_start = name_end.and_then(|end| end.checked_next_multiple_of(align));
            let next =
                desc_start.and_then(|start| start.checked_add(desc_size)?.checked_next_multiple_of(align));
            let (Some(name_end), Some(next)) = (name_end, next) else { return true };
            if kind == NT_GNU_PROPERTY_TYPE_0 as usize && notes.get(12..name_end) == Some(b"GNU\0") {
                return true;
            }
            let Some(rest) = notes.get(next..) else { return true };
            notes = rest;
        }
        false
    }
}

/// `size` bytes at `offset`, after checking that they lie inside the file.
fn read(source: &dyn Source, offset: u64, size: u64, what: &str) -> Result<Vec<u8>> {
    if !in_file(offset, size, source.size()) {
        return Err(format!("the {what} extends past the end of the file (truncated?)"));
    }
    if size > MAX_READ {
        return Err(format!("the {what} is implausibly large ({size} bytes)"));
    }
    let mut bytes = vec![0; size as usize]; // At most MAX_READ.
    source.read_exact_at(&mut bytes, offset).map_err(|e| format!("cannot read the {what}: {e}"))?;
    Ok(bytes)
}

/// Reads `count` entries of `entry` bytes each at `offset`, failing if any lies past the end.
fn read_table<T>(source: &dyn Source, offset: u64, count: usize, entry: usize, what: &str) -> Result<Vec<T>>
where
    T: for<'b> scroll::ctx::TryFromCtx<'b, scroll::Endian, Error = scroll::Error>,
{
    let size = count.checked_mul(entry).and_then(|size| u64::try_from(size).ok());
    let bytes = read(source, offset, size.unwrap_or(u64::MAX), what)?;
    bytes
        .chunks_exact(entry)
        .map(|chunk| chunk.pread_with::<T>(0, LE).map_err(|e| format!("cannot read the {what}: {e}")))
        .collect()
}

fn read_sections(source: &dyn Source, header: &Header) -> Result<Vec<SectionHeader>> {
    if header.e_shoff == 0 {
        return Ok(Vec::new());
    }
    if usize::from(header.e_shentsize) != SIZEOF_SHDR {
        return Err(format!("inconsistent ELF header: section header size {}", header.e_shentsize));
    }
    let what = "section header table";
    // With 0xff00 or more sections, e_shnum is 0 and the first header holds the count.
    let count = match header.e_shnum {
        0 => read_table::<SectionHeader>(source, header.e_shoff, 1, SIZEOF_SHDR, what)?
            .first()
            .map_or(0, |first| first.sh_size),
        count => count.into(),
    };
    let count = usize::try_from(count).map_err(|_| format!("the {what} is implausibly large"))?;
    read_table(source, header.e_shoff, count, SIZEOF_SHDR, what)
}

impl Dynamic {
    /// The entries before the terminator.
    pub fn used(&self) -> &[Dyn] {
        self.entries.get(..self.terminator).unwrap_or_default()
    }

    pub fn position(&self, tag: u64) -> Option<usize> {
        self.used().iter().position(|entry| entry.d_tag == tag)
    }

    pub fn value(&self, tag: u64) -> Option<u64> {
        self.position(tag).and_then(|index| self.entries.get(index)).map(|entry| entry.d_val)
    }

    pub fn set(&mut self, index: usize, d_tag: u64, d_val: u64) -> Result<()> {
        let entry = self.entries.get_mut(index).ok_or("internal error: dynamic entry out of range")?;
        *entry = Dyn { d_tag, d_val };
        Ok(())
    }
}

impl Strings {
    /// The string at `index`, without its NUL.
    pub fn at(&self, index: u64) -> Result<&[u8]> {
        let tail = usize::try_from(index).ok().and_then(|index| self.table.get(index..));
        let tail = tail.ok_or_else(|| format!("string offset {index} is past the dynamic string table"))?;
        let end = tail
            .iter()
            .position(|&byte| byte == 0)
            .ok_or_else(|| format!("the dynamic string at offset {index} is not NUL-terminated"))?;
        Ok(&tail[..end])
    }

    /// Whether the string at `index` is the tail of a longer one (a non-NUL byte before it).
    pub fn is_tail_at(&self, index: u64) -> bool {
        let before = usize::try_from(index).ok().and_then(|index| index.checked_sub(1));
        before.is_some_and(|before| self.table.get(before) != Some(&0))
    }
}

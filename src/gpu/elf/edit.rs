//! Planning a rewrite: from a parsed [`Image`], the byte ranges to overwrite and to append, as
//! a [`Patch`]. Nothing is moved: strings that do not fit where they are go into bytes appended
//! to the file and mapped by a read-only `PT_LOAD`.

use goblin::elf::dynamic::{DT_NULL, DT_RPATH, DT_RUNPATH, DT_STRSZ, DT_STRTAB};
use goblin::elf::program_header::{PF_R, PT_GNU_PROPERTY, PT_INTERP, PT_LOAD, PT_NOTE, PT_NULL};
use goblin::elf::section_header::{SHF_ALLOC, SHT_PROGBITS, SHT_STRTAB};
use goblin::elf64::dynamic::SIZEOF_DYN;
use goblin::elf64::header::SIZEOF_EHDR;
use goblin::elf64::program_header::{ProgramHeader, SIZEOF_PHDR};
use goblin::elf64::section_header::{SIZEOF_SHDR, SectionHeader};
use scroll::{LE, Pwrite};

use super::Result;
use super::image::{Dynamic, Image, Strings};

/// The smallest alignment of the added `PT_LOAD`: the x86-64 page size (binaries built for
/// larger pages carry a larger `p_align`, which is used instead).
const MIN_LOAD_ALIGN: u64 = 0x1000;
/// Where appended bytes start: a round offset, for readable `readelf` output only.
pub(super) const APPEND_ALIGN: u64 = 16;

/// Changes to a file: byte ranges to overwrite (disjoint, in order of offset), some of them
/// past its current end, and its size afterwards (zeros fill any gap).
pub(super) struct Patch {
    pub size: u64,
    pub writes: Vec<(u64, Vec<u8>)>,
}

impl Patch {
    /// No change at all.
    pub fn unchanged(size: u64) -> Self {
        Patch { size, writes: Vec::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Lays the parts of the writes that fall into `offset..offset + buffer.len()` over
    /// `buffer`.
    pub fn overlay(&self, offset: u64, buffer: &mut [u8]) {
        let end = offset.saturating_add(buffer.len() as u64);
        for (at, bytes) in &self.writes {
            let from = (*at).max(offset);
            let to = at.saturating_add(bytes.len() as u64).min(end);
            if from >= to {
                continue;
            }
            // In range by the clamping above: from..to lies in both at.. and offset..end.
            let source = &bytes[(from - at) as usize..(to - at) as usize];
            buffer[(from - offset) as usize..(to - offset) as usize].copy_from_slice(source);
        }
    }
}

/// A rewrite in progress: the headers as they will be written back, in-place writes, and the
/// bytes to append and map.
pub(super) struct Edit<'i, 's> {
    image: &'i Image<'s>,
    segments: Vec<ProgramHeader>,
    sections: Vec<SectionHeader>,
    dynamic: Option<Dynamic>,
    /// What each write is (for messages), where it goes, and its bytes.
    writes: Vec<(&'static str, u64, Vec<u8>)>,
    appendix: Vec<u8>,
    /// Where in `appendix` the interpreter went, and its size with the NUL.
    moved_interpreter: Option<(u64, u64)>,
    /// Where in `appendix` the copied string table went, its new size, and its old address.
    moved_strings: Option<(u64, u64, u64)>,
}

impl<'i, 's> Edit<'i, 's> {
    pub fn new(image: &'i Image<'s>, dynamic: Option<Dynamic>) -> Self {
        Edit {
            image,
            segments: image.segments.clone(),
            sections: image.sections.clone(),
            dynamic,
            writes: Vec::new(),
            appendix: Vec::new(),
            moved_interpreter: None,
            moved_strings: None,
        }
    }

    fn append(&mut self, bytes: &[u8]) -> u64 {
        let at = self.appendix.len() as u64;
        self.appendix.extend_from_slice(bytes);
        at
    }

    /// Writes `value` at `offset`, NUL-filling the rest of a slot of `slot` bytes.
    fn overwrite(&mut self, what: &'static str, offset: u64, slot: usize, value: &[u8]) {
        let mut bytes = value.to_vec();
        bytes.resize(slot.max(value.len() + 1), 0);
        self.writes.push((what, offset, bytes));
    }

    pub fn set_interpreter(&mut self, path: &[u8]) -> Result<()> {
        let segment = self.image.only_segment(PT_INTERP)?.ok_or("no PT_INTERP")?;
        // The segment keeps its size, so that a later, longer path can still use the room.
        let room = usize::try_from(segment.p_filesz).unwrap_or(0);
        if path.len() < room {
            self.overwrite("PT_INTERP segment", segment.p_offset, room, path);
            return Ok(());
        }
        let at = self.append(path);
        self.append(&[0]);
        self.moved_interpreter = Some((at, path.len() as u64 + 1));
        Ok(())
    }

    pub fn set_runpath(&mut self, value: &[u8]) -> Result<()> {
        let mut dynamic = self.dynamic.clone().ok_or("no PT_DYNAMIC segment")?;
        let strings = self.image.strings(&dynamic)?;
        let slot = dynamic.position(DT_RUNPATH).or_else(|| dynamic.position(DT_RPATH));
        let index = match slot {
            Some(slot) => {
                let old = dynamic.entries.get(slot).map_or(0, |entry| entry.d_val);
                if let Some(room) = self.room_in_place(&dynamic, &strings, slot, value.len())? {
                    dynamic.set(slot, DT_RUNPATH, old)?;
                    self.dynamic = Some(dynamic);
                    self.overwrite("DT_RUNPATH string", strings.offset + old, room, value);
                    return Ok(());
                }
                slot
            }
            None => {
                let spare = dynamic.terminator + 1;
                if spare >= dynamic.entries.len() {
                    return Err(
                        "no room for DT_RUNPATH: the dynamic section has no spare DT_NULL slot".into()
                    );
                }
                dynamic.set(spare, DT_NULL, 0)?;
                dynamic.terminator = spare;
                spare - 1
            }
        };
        // The new string goes at the end of a copy of the whole table, so that every other
        // offset into it stays valid.
        let old_size = strings.table.len() as u64;
        dynamic.set(index, DT_RUNPATH, old_size)?;
        let at = self.append(&strings.table);
        self.append(value);
        self.append(&[0]);
        self.moved_strings = Some((at, old_size + value.len() as u64 + 1, strings.vaddr));
        self.dynamic = Some(dynamic);
        Ok(())
    }

    /// The size of the string that dynamic entry `slot` names, NUL included, if `len` bytes
    /// and a NUL fit there and nothing else refers to any of its bytes: linkers store a string
    /// that ends another as that one's tail.
    fn room_in_place(
        &self,
        dynamic: &Dynamic,
        strings: &Strings,
        slot: usize,
        len: usize,
    ) -> Result<Option<usize>> {
        let index = dynamic.entries.get(slot).map_or(0, |entry| entry.d_val);
        let old = strings.at(index)?.len();
        if len > old || strings.is_tail_at(index) {
            return Ok(None);
        }
        let Some(references) = self.image.string_references(dynamic, slot) else { return Ok(None) };
        let end = index + old as u64;
        if references.iter().any(|&reference| (index..=end).contains(&reference)) {
            return Ok(None);
        }
        Ok(Some(old + 1))
    }

    /// Maps the appendix (if any), points the headers at what moved, and writes them back.
    pub fn finish(mut self) -> Result<Patch> {
        let mut size = self.image.size();
        if !self.appendix.is_empty() {
            let (offset, vaddr) = self.place_appendix()?;
            if let Some((at, bytes)) = self.moved_interpreter {
                self.point_interpreter(offset + at, vaddr + at, bytes)?;
            }
            if let Some((at, bytes, old_vaddr)) = self.moved_strings {
                self.point_strings(offset + at, vaddr + at, bytes, old_vaddr)?;
            }
            size = offset + self.appendix.len() as u64;
            let appendix = std::mem::take(&mut self.appendix);
            self.writes.push(("appended bytes", offset, appendix));
        }
        self.write_headers()?;
        check_disjoint(&mut self.writes)?;
        Ok(Patch {
            size,
            writes: self.writes.into_iter().map(|(_, offset, bytes)| (offset, bytes)).collect(),
        })
    }

    /// Where the appendix goes: its file offset and address.
    fn place_appendix(&mut self) -> Result<(u64, u64)> {
        let size = self.appendix.len() as u64;
        let end = self.image.size();
        if let Some(segment) = self.growable_segment() {
            // It ends the file, so the appendix continues it.
            let vaddr = segment.p_vaddr + segment.p_filesz;
            vaddr.checked_add(size).ok_or("the grown segment would end past the address space")?;
            segment.p_filesz += size;
            segment.p_memsz += size;
            return Ok((end, vaddr));
        }
        let spare = self.spare_segment().ok_or(
            "no room for the new strings: no PT_NOTE or PT_NULL program header can be turned into a \
             segment for them (and the program header table cannot grow without moving code)",
        )?;
        let loads = || self.segments.iter().filter(|segment| segment.p_type == PT_LOAD);
        let align = loads().map(|segment| segment.p_align).max().unwrap_or(0).max(MIN_LOAD_ALIGN);
        let mapped_end = loads().filter_map(|segment| segment.p_vaddr.checked_add(segment.p_memsz)).max();
        let offset = end.checked_next_multiple_of(APPEND_ALIGN).ok_or("the file is too large")?;
        // Above everything mapped, on a fresh page, congruent to the offset as mmap needs.
        let vaddr = mapped_end
            .unwrap_or(0)
            .checked_next_multiple_of(align)
            .and_then(|base| base.checked_add(offset % align))
            .filter(|vaddr| vaddr.checked_add(size).is_some())
            .ok_or("no address space left above the last segment")?;
        let new = ProgramHeader {
            p_type: PT_LOAD,
            p_flags: PF_R,
            p_offset: offset,
            p_vaddr: vaddr,
            p_paddr: vaddr,
            p_filesz: size,
            p_memsz: size,
            p_align: align,
        };
        // Load segments must stay in ascending address order: the new one goes after the last.
        self.segments.remove(spare);
        let after_loads =
            self.segments.iter().rposition(|segment| segment.p_type == PT_LOAD).map_or(0, |i| i + 1);
        self.segments.insert(after_loads, new);
        Ok((offset, vaddr))
    }

    /// A read-only `PT_LOAD` that ends both the file and the address space (one added by an
    /// earlier run): it can simply grow.
    fn growable_segment(&mut self) -> Option<&mut ProgramHeader> {
        let end = self.image.size();
        let last = self
            .segments
            .iter_mut()
            .filter(|segment| segment.p_type == PT_LOAD)
            .max_by_key(|segment| segment.p_vaddr)?;
        let ends_file = last.p_offset.checked_add(last.p_filesz) == Some(end);
        // Read-only and nothing else, as the segments this rewrite adds: OS- or
        // processor-specific flag bits would apply to the appended bytes too.
        let plain = last.p_memsz == last.p_filesz && last.p_flags == PF_R;
        (ends_file && plain).then_some(last)
    }

    /// The program header to turn into the new `PT_LOAD`: a `PT_NULL`, else a note without
    /// GNU properties, else one whose properties `PT_GNU_PROPERTY` also carries.
    fn spare_segment(&self) -> Option<usize> {
        let properties_elsewhere = self.segments.iter().any(|segment| segment.p_type == PT_GNU_PROPERTY);
        let image = self.image;
        let rank = |segment: &ProgramHeader| match segment.p_type {
            PT_NULL => Some(0),
            PT_NOTE if !image.has_property_note(segment) => Some(1),
            PT_NOTE if properties_elsewhere => Some(2),
            _ => None,
        };
        let ranked =
            self.segments.iter().enumerate().filter_map(|(index, segment)| Some((rank(segment)?, index)));
        ranked.min().map(|(_, index)| index)
    }

    fn point_interpreter(&mut self, offset: u64, vaddr: u64, size: u64) -> Result<()> {
        let segment =
            self.segments.iter_mut().find(|segment| segment.p_type == PT_INTERP).ok_or("no PT_INTERP")?;
        let (old_offset, old_vaddr) = (segment.p_offset, segment.p_vaddr);
        *segment = ProgramHeader {
            p_offset: offset,
            p_vaddr: vaddr,
            p_paddr: vaddr,
            p_filesz: size,
            p_memsz: size,
            ..*segment
        };
        // .interp, so that readelf -S and strip see what the loader sees.
        for section in &mut self.sections {
            if section.sh_type == SHT_PROGBITS
                && section.sh_offset == old_offset
                && section.sh_addr == old_vaddr
            {
                (section.sh_offset, section.sh_addr, section.sh_size) = (offset, vaddr, size);
            }
        }
        Ok(())
    }

    fn point_strings(&mut self, offset: u64, vaddr: u64, size: u64, old_vaddr: u64) -> Result<()> {
        let dynamic = self.dynamic.as_mut().ok_or("no PT_DYNAMIC segment")?;
        for (tag, value) in [(DT_STRTAB, vaddr), (DT_STRSZ, size)] {
            let index = dynamic.position(tag).ok_or("no DT_STRTAB or DT_STRSZ")?;
            dynamic.set(index, tag, value)?;
        }
        // .dynstr, so that readelf and the symbol tables' links find the new table.
        for section in &mut self.sections {
            let allocated = section.sh_flags & u64::from(SHF_ALLOC) != 0;
            if section.sh_type == SHT_STRTAB && allocated && section.sh_addr == old_vaddr {
                (section.sh_offset, section.sh_addr, section.sh_size) = (offset, vaddr, size);
            }
        }
        Ok(())
    }

    /// Adds writes of the program headers, the dynamic section and the section headers.
    fn write_headers(&mut self) -> Result<()> {
        let header = &self.image.header;
        self.writes.push(("program header table", header.e_phoff, serialize(&self.segments, SIZEOF_PHDR)?));
        if let Some(dynamic) = &self.dynamic {
            self.writes.push(("dynamic section", dynamic.offset, serialize(&dynamic.entries, SIZEOF_DYN)?));
        }
        if !self.sections.is_empty() {
            self.writes.push((
                "section header table",
                header.e_shoff,
                serialize(&self.sections, SIZEOF_SHDR)?,
            ));
        }
        Ok(())
    }
}

/// Refuses writes that overlap (sorting them by offset): one would undo part of the other, and
/// the result would not be what was planned. Refuses writes into the ELF header too: it is not
/// rewritten, and a write there would move where everything else is found. Only a crafted file
/// places, say, the interpreter path inside the program header table or the ELF header; in a
/// linker's output these parts never share bytes.
fn check_disjoint(writes: &mut [(&'static str, u64, Vec<u8>)]) -> Result<()> {
    writes.sort_by_key(|(_, offset, _)| *offset);
    if let Some((what, _, _)) = writes.first().filter(|(_, offset, _)| *offset < SIZEOF_EHDR as u64) {
        return Err(format!(
            "the {what} overlaps the ELF header in the file: rewriting it would damage the header"
        ));
    }
    for pair in writes.windows(2) {
        let [(first, offset, bytes), (second, next, _)] = pair else { continue };
        if offset.saturating_add(bytes.len() as u64) > *next {
            return Err(format!(
                "the {first} and the {second} overlap in the file: rewriting one would damage the other"
            ));
        }
    }
    Ok(())
}

/// A table of `entry`-byte records, little-endian.
fn serialize<T>(records: &[T], entry: usize) -> Result<Vec<u8>>
where
    T: Copy + scroll::ctx::TryIntoCtx<scroll::Endian, Error = scroll::Error>,
{
    let mut bytes = vec![0; records.len() * entry];
    for (index, record) in records.iter().enumerate() {
        bytes.pwrite_with(*record, index * entry, LE).map_err(|e| format!("internal error: {e}"))?;
    }
    Ok(bytes)
}

//! The bytes of an ld.so.cache in glibc's "new" format (`glibc-ld.so.cache1.1`, the only one
//! ldconfig writes since glibc 2.32), little-endian:
//!
//! ```text
//! 0   magic "glibc-ld.so.cache" + version "1.1"
//! 20  nlibs, len_strings: u32
//! 28  flags: u8 (endianness: 0 unknown, 1 invalid, 2 little, 3 big), 3 bytes padding
//! 32  extension_offset: u32 (from the file start, a multiple of 4; 0 for none), 12 bytes unused
//! 48  nlibs entries of 24 bytes: flags i32, key u32, value u32, osversion u32 (0), hwcap u64
//!     then the string table: NUL-terminated names; key and value are offsets of a string,
//!     counted from the start of this header
//!     then the extension directory: magic 0xEAA42174, count, and per section tag, flags,
//!     offset (from the file start), size; tag 0 is the generator string `ldconfig -p` prints
//! ```
//!
//! Reading also accepts the "compat" layout, where this header follows an old-format
//! (`ld.so-1.7.0`) table; a file with only the old table is refused, since no glibc of the last
//! decade writes one.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use super::{Entry, order};

const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const HEADER_LEN: usize = 48;
const ENTRY_LEN: usize = 24;
/// Old-format header (magic padded to 12 bytes, nlibs) and entry (flags, key, value).
const OLD_HEADER_LEN: usize = 16;
const OLD_ENTRY_LEN: usize = 12;
const ENDIAN_MASK: u8 = 3;
const ENDIAN_LITTLE: u8 = 2;
const EXTENSION_MAGIC: u32 = 0xEAA4_2174;
const EXTENSION_HEADER_LEN: usize = 8;
const SECTION_LEN: usize = 16;
const TAG_GENERATOR: u32 = 0;

/// A cache as read back from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// In file order.
    pub entries: Vec<Entry>,
    /// Who wrote the file, if it says.
    pub generator: Option<String>,
}

/// The bytes of a cache holding `entries` (sorted here as the loader requires) and naming
/// `generator` as its writer.
///
/// Strings are not deduplicated across entries, except that a name which ends its path (the
/// usual `DIR/NAME`) points into the path string: the loader only follows offsets.
pub fn encode(entries: &[Entry], generator: &str) -> Result<Vec<u8>, String> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| order::cache_order(a, b));
    let strings_start = HEADER_LEN + ENTRY_LEN * sorted.len();
    let mut table = Vec::with_capacity(HEADER_LEN + ENTRY_LEN * sorted.len() + 64 * sorted.len());
    table.resize(strings_start, 0);
    let mut records = Vec::with_capacity(sorted.len());
    for &entry in &sorted {
        let (soname, path) = (entry.soname.as_bytes(), entry.path.as_os_str().as_bytes());
        if soname.is_empty() || soname.contains(&0) || path.contains(&0) {
            return Err(format!(
                "cannot store {:?} => {:?}: empty or contains NUL",
                entry.soname, entry.path
            ));
        }
        let value = table.len();
        push_c_string(&mut table, path);
        let key = if path.ends_with(soname) && path[..path.len() - soname.len()].ends_with(b"/") {
            value + path.len() - soname.len()
        } else {
            let key = table.len();
            push_c_string(&mut table, soname);
            key
        };
        records.push((entry, key, value));
    }
    let len_strings = table.len() - strings_start;
    let extension_offset = table.len().next_multiple_of(4);
    table.resize(extension_offset, 0);
    let generator_offset = extension_offset + EXTENSION_HEADER_LEN + SECTION_LEN;
    for word in [EXTENSION_MAGIC, 1, TAG_GENERATOR, 0, to_u32(generator_offset)?, to_u32(generator.len())?] {
        table.extend_from_slice(&word.to_le_bytes());
    }
    table.extend_from_slice(generator.as_bytes());
    to_u32(table.len())?;

    table[..MAGIC.len()].copy_from_slice(MAGIC);
    put_u32(&mut table, 20, to_u32(sorted.len())?);
    put_u32(&mut table, 24, to_u32(len_strings)?);
    table[28] = ENDIAN_LITTLE;
    put_u32(&mut table, 32, to_u32(extension_offset)?);
    for (index, (entry, key, value)) in records.into_iter().enumerate() {
        let at = HEADER_LEN + index * ENTRY_LEN;
        table[at..at + 4].copy_from_slice(&entry.flags.to_le_bytes());
        put_u32(&mut table, at + 4, to_u32(key)?);
        put_u32(&mut table, at + 8, to_u32(value)?);
        table[at + 16..at + 24].copy_from_slice(&entry.hwcap.to_le_bytes());
    }
    Ok(table)
}

/// Reads a cache back. Every offset and count is checked against the file: any input gives a
/// cache or an error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Cache, String> {
    let base = new_header_offset(bytes)?;
    let header = &bytes[base..];
    let count = u32_at(header, 20)? as usize;
    let flags = *header.get(28).ok_or("truncated header")?;
    if flags != 0 && flags & ENDIAN_MASK != ENDIAN_LITTLE {
        return Err(format!("not a little-endian cache (endianness flags {flags:#x})"));
    }
    let table_end = count.checked_mul(ENTRY_LEN).and_then(|n| n.checked_add(HEADER_LEN));
    if table_end.is_none_or(|end| end > header.len()) {
        return Err(format!("{count} entries do not fit in {} bytes", header.len()));
    }
    let entries = (0..count)
        .map(|index| entry_at(header, HEADER_LEN + index * ENTRY_LEN))
        .collect::<Result<Vec<_>, _>>()?;
    let generator = generator(bytes, u32_at(header, 32)? as usize)?;
    Ok(Cache { entries, generator })
}

/// Where the new-format header starts: at 0, or after the old table of a "compat" file.
fn new_header_offset(bytes: &[u8]) -> Result<usize, String> {
    if bytes.starts_with(MAGIC) {
        return Ok(0);
    }
    if !bytes.starts_with(OLD_MAGIC) {
        return Err("not an ld.so.cache (unknown magic)".into());
    }
    let old_count = u32_at(bytes, 12)? as usize;
    let offset = old_count
        .checked_mul(OLD_ENTRY_LEN)
        .and_then(|n| n.checked_add(OLD_HEADER_LEN))
        .map(|end| end.next_multiple_of(8))
        .filter(|&offset| bytes.get(offset..).is_some_and(|rest| rest.starts_with(MAGIC)));
    offset.ok_or_else(|| "an old-format (ld.so-1.7.0) cache without the new format is not supported".into())
}

fn entry_at(header: &[u8], at: usize) -> Result<Entry, String> {
    let flags = i32::from_le_bytes(array_at(header, at)?);
    let soname = c_string_at(header, u32_at(header, at + 4)? as usize)?;
    let path = c_string_at(header, u32_at(header, at + 8)? as usize)?;
    let hwcap = u64::from_le_bytes(array_at(header, at + 16)?);
    Ok(Entry {
        soname: OsString::from_vec(soname),
        path: PathBuf::from(OsString::from_vec(path)),
        flags,
        hwcap,
    })
}

/// The generator string from the extension directory at `offset` (0: none).
fn generator(bytes: &[u8], offset: usize) -> Result<Option<String>, String> {
    if offset == 0 {
        return Ok(None);
    }
    if !offset.is_multiple_of(4) || u32_at(bytes, offset)? != EXTENSION_MAGIC {
        return Err(format!("malformed extension directory at {offset}"));
    }
    let sections = u32_at(bytes, offset + 4)? as usize;
    let mut found = None;
    for index in 0..sections {
        let at = index
            .checked_mul(SECTION_LEN)
            .and_then(|n| n.checked_add(offset + EXTENSION_HEADER_LEN))
            .ok_or("extension directory too large")?;
        let (tag, start, size) = (u32_at(bytes, at)?, u32_at(bytes, at + 8)?, u32_at(bytes, at + 12)?);
        let data = (start as usize)
            .checked_add(size as usize)
            .and_then(|end| bytes.get(start as usize..end))
            .ok_or_else(|| format!("extension section {index} lies outside the file"))?;
        if tag == TAG_GENERATOR {
            found = Some(String::from_utf8_lossy(data).into_owned());
        }
    }
    Ok(found)
}

fn push_c_string(table: &mut Vec<u8>, bytes: &[u8]) {
    table.extend_from_slice(bytes);
    table.push(0);
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn to_u32(value: usize) -> Result<u32, String> {
    u32::try_from(value).map_err(|_| format!("the cache would exceed 4 GiB ({value} bytes)"))
}

fn array_at<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], String> {
    at.checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .and_then(|slice| slice.try_into().ok())
        .ok_or_else(|| format!("truncated at offset {at}"))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, String> {
    array_at(bytes, at).map(u32::from_le_bytes)
}

/// The NUL-terminated string at `at`, which must end inside `bytes`.
fn c_string_at(bytes: &[u8], at: usize) -> Result<Vec<u8>, String> {
    let rest = bytes.get(at..).ok_or_else(|| format!("string offset {at} lies outside the file"))?;
    let end = memchr::memchr(0, rest).ok_or_else(|| format!("string at {at} is not terminated"))?;
    Ok(rest[..end].to_vec())
}

//! The order of a cache's entries. The loader finds a name by binary search, so the file must be
//! sorted exactly by the comparison the loader uses, or lookups silently miss.

use std::cmp::Ordering;
use std::os::unix::ffi::OsStrExt;

use super::Entry;

/// glibc's `_dl_cache_libcmp`: runs of digits compare by their numeric value (so `libfoo.so.10`
/// sorts above `libfoo.so.9`), a digit sorts above any other byte, and other bytes compare as
/// C's signed `char` (bytes from 0x80 up sort below the end of the string).
///
/// glibc accumulates a run's value in an `int` and returns the difference of two values; runs
/// of ten or more digits can overflow either step. Here a run's value wraps like glibc's, but
/// two values are compared rather than subtracted, which keeps this a total order (a sort must
/// never see an inconsistent comparison) and agrees with glibc whenever the difference fits in
/// an `int`, i.e. for every version number in practice.
pub fn libcmp(left: &[u8], right: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    loop {
        let (x, y) = (byte_at(left, i), byte_at(right, j));
        if x == 0 {
            return 0.cmp(&signed(y));
        }
        match (x.is_ascii_digit(), y.is_ascii_digit()) {
            (true, true) => {
                let (value_x, next_i) = digit_run(left, i);
                let (value_y, next_j) = digit_run(right, j);
                if value_x != value_y {
                    return value_x.cmp(&value_y);
                }
                (i, j) = (next_i, next_j);
            }
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            (false, false) if x != y => return signed(x).cmp(&signed(y)),
            (false, false) => (i, j) = (i + 1, j + 1),
        }
    }
}

/// Sorts entries the way ldconfig orders its cache: by name, descending under [`libcmp`], then
/// by flags, descending. The sort is stable, so entries that compare equal keep the order they
/// were given in (ldconfig's order of discovery), which decides which one the loader finds
/// first.
pub fn sort(entries: &mut [Entry]) {
    entries.sort_by(cache_order);
}

/// The order of [`sort`]: `Less` when `a` comes first.
pub fn cache_order(a: &Entry, b: &Entry) -> Ordering {
    libcmp(b.soname.as_bytes(), a.soname.as_bytes()).then_with(|| b.flags.cmp(&a.flags))
}

/// The byte at `index`, or the terminating NUL of the C string past the end.
fn byte_at(bytes: &[u8], index: usize) -> u8 {
    bytes.get(index).copied().unwrap_or(0)
}

fn signed(byte: u8) -> i8 {
    byte as i8
}

/// The value of the run of digits starting at `start` (wrapping like glibc's `int`), and the
/// index just after it.
fn digit_run(bytes: &[u8], start: usize) -> (i32, usize) {
    let mut value: i32 = 0;
    let mut index = start;
    while let Some(&digit) = bytes.get(index).filter(|b| b.is_ascii_digit()) {
        value = value.wrapping_mul(10).wrapping_add(i32::from(digit - b'0'));
        index += 1;
    }
    (value, index)
}

//! Cutting a byte stream into lines: complete lines pass through, a very long line is split
//! into pieces of at most [`MAX_LINE`] bytes (so one line cannot grow memory without bound),
//! and a partial line waits for its end until the caller flushes it.

/// The longest line kept whole; longer lines continue on the next output line.
pub const MAX_LINE: usize = 16 * 1024;

/// Keeps the unfinished tail of a stream between reads.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Appends `data` and moves every complete line (each ending in `\n`) into `lines`.
    pub fn push(&mut self, data: &[u8], lines: &mut Vec<u8>) {
        let mut rest = data;
        // The common case, in one copy: nothing pending, and the complete lines need no
        // splitting and no CR trimming.
        if self.partial.is_empty()
            && let Some(last) = memchr::memrchr(b'\n', rest)
            && plain_lines(&rest[..=last])
        {
            lines.extend_from_slice(&rest[..=last]);
            rest = &rest[last + 1..];
        }
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let (line, after) = rest.split_at(end + 1);
            if self.partial.is_empty() {
                push_pieces(&line[..line.len() - 1], lines);
            } else {
                self.partial.extend_from_slice(&line[..line.len() - 1]);
                push_pieces(&self.partial, lines);
                self.partial.clear();
            }
            rest = after;
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() >= MAX_LINE {
            let whole = self.partial.len() / MAX_LINE * MAX_LINE;
            push_pieces(&self.partial[..whole], lines);
            self.partial.drain(..whole);
        }
    }

    /// [`push`](Self::push) for a buffer the caller gives away: when nothing is pending and
    /// its complete lines need no splitting or trimming, they become `lines` without a copy
    /// (under a flood of output, copying every read was a tenth of the init's work) and only
    /// the unfinished tail is copied. `lines` must be empty. Returns the buffer when it was
    /// not taken, for the next read.
    pub fn push_owned(&mut self, mut data: Vec<u8>, lines: &mut Vec<u8>) -> Option<Vec<u8>> {
        if self.partial.is_empty()
            && lines.is_empty()
            && let Some(last) = memchr::memrchr(b'\n', &data)
            && plain_lines(&data[..=last])
        {
            self.partial.extend_from_slice(&data[last + 1..]);
            data.truncate(last + 1);
            *lines = data;
            return None;
        }
        self.push(&data, lines);
        data.clear();
        Some(data)
    }

    /// Whether an unfinished line is waiting.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Ends the unfinished line (after a quiet period, or at end of stream).
    pub fn flush(&mut self, lines: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            push_pieces(&self.partial, lines);
            self.partial.clear();
        }
    }
}

/// Whether `text` (whole lines) has no line longer than [`MAX_LINE`] and no CR before a newline.
/// Without visiting every line: one search for a CR at all, then a hop from newline to newline
/// at most `MAX_LINE + 1` bytes apart, each found searching back from the farthest place it may
/// be (under a flood of short lines, a line-by-line search was the init's busiest code).
fn plain_lines(text: &[u8]) -> bool {
    if memchr::memchr(b'\r', text).is_some() {
        let mut start = 0;
        return memchr::memchr_iter(b'\n', text).all(|end| {
            let line = &text[start..end];
            start = end + 1;
            line.len() <= MAX_LINE && line.last() != Some(&b'\r')
        });
    }
    let mut start = 0;
    while start < text.len() {
        let window = &text[start..text.len().min(start + MAX_LINE + 1)];
        match memchr::memrchr(b'\n', window) {
            Some(end) => start += end + 1,
            None => return false,
        }
    }
    true
}

/// Appends `line` (without its newline) as pieces of at most [`MAX_LINE`] bytes, each ending in
/// `\n`. A trailing `\r` (CRLF output) is dropped.
fn push_pieces(line: &[u8], lines: &mut Vec<u8>) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        lines.push(b'\n');
        return;
    }
    for piece in line.chunks(MAX_LINE) {
        lines.extend_from_slice(piece);
        lines.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], flush: bool) -> Vec<String> {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, &mut lines);
        }
        if flush {
            splitter.flush(&mut lines);
        }
        String::from_utf8(lines).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn lines_across_reads_are_joined() {
        assert_eq!(split(&[b"hel", b"lo\nwor", b"ld\n"], false), ["hello", "world"]);
    }

    #[test]
    fn partial_line_waits_until_flushed() {
        assert_eq!(split(&[b"a\npartial"], false), ["a"]);
        assert_eq!(split(&[b"a\npartial"], true), ["a", "partial"]);
    }

    #[test]
    fn crlf_and_empty_lines() {
        assert_eq!(split(&[b"dos\r\n\nend\n"], false), ["dos", "", "end"]);
    }

    #[test]
    fn an_owned_buffer_of_plain_lines_is_taken_whole_and_others_are_copied() {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        let data = b"one\ntwo\npart".to_vec();
        let pointer = data.as_ptr();
        assert!(splitter.push_owned(data, &mut lines).is_none(), "taken");
        assert_eq!((lines.as_ptr(), &lines[..]), (pointer, &b"one\ntwo\n"[..]), "without a copy");
        let mut more = Vec::new();
        let returned = splitter.push_owned(b"ial\ndos\r\n".to_vec(), &mut more);
        assert_eq!(returned.map(|b| b.is_empty()), Some(true), "a partial line was pending");
        assert_eq!(more, b"partial\ndos\n");
        assert!(!splitter.has_partial());
    }

    #[test]
    fn plain_lines_are_told_from_long_ones_and_crlf() {
        let line = |len: usize| [vec![b'x'; len], vec![b'\n']].concat();
        let many_short: Vec<u8> = (0..1000).flat_map(|_| line(99)).collect();
        assert!(plain_lines(&many_short));
        assert!(plain_lines(&[line(MAX_LINE), line(3), line(MAX_LINE)].concat()));
        assert!(!plain_lines(&[line(3), line(MAX_LINE + 1), line(3)].concat()));
        assert!(!plain_lines(&[many_short.clone(), line(MAX_LINE + 1)].concat()));
        assert!(!plain_lines(b"dos\r\nline\n"));
        assert!(plain_lines(b"a\rb\nline\n"), "a CR inside a line is kept");
        assert!(plain_lines(b""));
    }

    #[test]
    fn long_lines_are_split_and_memory_stays_bounded() {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        for _ in 0..64 {
            splitter.push(&[b'x'; 16 * 1024], &mut lines);
            assert!(splitter.partial.len() < MAX_LINE);
        }
        assert_eq!(lines.len(), 64 * (MAX_LINE + 1));
        assert!(lines.split(|b| *b == b'\n').all(|l| l.len() <= MAX_LINE));
    }
}

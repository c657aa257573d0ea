//! authorized_keys lines from several sources (variables, a file), checked one by one, merged
//! and de-duplicated.
//!
//! The line format is OpenSSH's (sshd(8), AUTHORIZED_KEYS FILE FORMAT): `[options] type base64
//! [comment]`, options being comma-separated `name` or `name="value"` with quoted values that
//! may hold commas, spaces and `\"`. Checked here rather than with ssh-key, whose parser rejects
//! valid option lines (crates.md §1.7) and would bring a key-handling stack into the binary for
//! a syntax check: the options are split quote-aware and their names checked against OpenSSH's,
//! and the key data must decode to the wire form of a key of the type the line names (sshd
//! skips lines that fail the same way, silently; here each one is reported).
//!
//! A reason never quotes the line: a private key pasted by mistake must not end up in the log.

use std::collections::HashSet;
use std::fmt;

use base64ct::{Base64, Encoding};

/// Where key lines come from: its name for messages (`$SSH_PUBLIC_KEYS`, a file's path), and
/// its text.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// A line that was left out, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Skipped {
    pub source: String,
    /// 1-based.
    pub line: usize,
    pub reason: &'static str,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}: skipped, {}", self.source, self.line, self.reason)
    }
}

/// The merged authorized_keys.
#[derive(Debug, Default)]
pub struct Merged {
    /// The valid lines, trimmed, in source order, each key once (its first line wins).
    pub lines: Vec<String>,
    pub skipped: Vec<Skipped>,
    /// Lines whose key an earlier line already gave.
    pub duplicates: usize,
}

/// Merges the sources' key lines.
pub fn merge(sources: &[Source]) -> Merged {
    let mut merged = Merged::default();
    let mut seen = HashSet::new();
    for source in sources {
        for (index, line) in source.text.lines().enumerate() {
            match check_line(line) {
                Ok(None) => {}
                Ok(Some(key)) => {
                    if seen.insert(key) {
                        merged.lines.push(line.trim().to_string());
                    } else {
                        merged.duplicates += 1;
                    }
                }
                Err(reason) => {
                    merged.skipped.push(Skipped { source: source.name.clone(), line: index + 1, reason })
                }
            }
        }
    }
    merged
}

/// The key of one line (its decoded data, which identifies it), `None` for a blank or comment
/// line, or why the line is not valid.
pub fn check_line(line: &str) -> Result<Option<Vec<u8>>, &'static str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    if line.contains("PRIVATE KEY") {
        return Err("it is part of a private key (give the public key, the .pub file)");
    }
    let (first, rest) = split_token(line)?;
    let (key_type, rest) = match key_type(first) {
        Some(fields) => ((first, fields), rest),
        None => {
            check_options(first).map_err(|_| "it starts with neither a known key type nor valid options")?;
            let (second, rest) = split_token(rest)?;
            let fields = key_type(second)
                .ok_or("no known key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-*, sk-*) follows the options")?;
            ((second, fields), rest)
        }
    };
    let (data, _comment) = split_token(rest)?;
    if data.is_empty() {
        return Err("the key data is missing");
    }
    let key = Base64::decode_vec(data).map_err(|_| "the key data is not valid base64")?;
    check_key_data(key_type.0, key_type.1, &key)?;
    Ok(Some(key))
}

/// One field of a key's wire form after its type name.
enum Field {
    /// Exactly this text (an ECDSA key's curve).
    Text(&'static str),
    /// This many bytes (an Ed25519 point).
    Bytes(usize),
    /// Any non-empty value (RSA's numbers, an ECDSA point, a security key's application).
    NonEmpty,
}

/// The key types OpenSSH accepts by default, with the fields their wire form has
/// (RFC 4253 §6.6, RFC 5656 §3.1, RFC 8709 §4, OpenSSH's PROTOCOL.u2f).
const KEY_TYPES: [(&str, &[Field]); 7] = [
    ("ssh-ed25519", &[Field::Bytes(32)]),
    ("ssh-rsa", &[Field::NonEmpty, Field::NonEmpty]),
    ("ecdsa-sha2-nistp256", &[Field::Text("nistp256"), Field::NonEmpty]),
    ("ecdsa-sha2-nistp384", &[Field::Text("nistp384"), Field::NonEmpty]),
    ("ecdsa-sha2-nistp521", &[Field::Text("nistp521"), Field::NonEmpty]),
    ("sk-ssh-ed25519@openssh.com", &[Field::Bytes(32), Field::NonEmpty]),
    ("sk-ecdsa-sha2-nistp256@openssh.com", &[Field::Text("nistp256"), Field::NonEmpty, Field::NonEmpty]),
];

fn key_type(token: &str) -> Option<&'static [Field]> {
    KEY_TYPES.iter().find(|(name, _)| *name == token).map(|(_, fields)| *fields)
}

/// Checks that `key` is the wire form of a `name` key: its type name, then `fields`, nothing
/// after.
fn check_key_data(name: &str, fields: &[Field], key: &[u8]) -> Result<(), &'static str> {
    let mut rest = key;
    if wire_string(&mut rest) != Some(name.as_bytes()) {
        return Err("the key data is not a key of the type the line names");
    }
    let fits = fields.iter().all(|field| {
        wire_string(&mut rest).is_some_and(|value| match field {
            Field::Text(text) => value == text.as_bytes(),
            Field::Bytes(len) => value.len() == *len,
            Field::NonEmpty => !value.is_empty(),
        })
    });
    if fits && rest.is_empty() {
        Ok(())
    } else {
        Err("the key data is damaged (cut short or with extra bytes)")
    }
}

/// Takes one SSH wire string (a 32-bit big-endian length, then the bytes) off `data`.
fn wire_string<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = data.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    let value = rest.get(..len)?;
    *data = &rest[len..];
    Some(value)
}

/// The options OpenSSH knows (sshd(8)), lowercase: flags, then those that take a value.
const FLAG_OPTIONS: [&str; 14] = [
    "agent-forwarding",
    "cert-authority",
    "no-agent-forwarding",
    "no-port-forwarding",
    "no-pty",
    "no-touch-required",
    "no-user-rc",
    "no-x11-forwarding",
    "port-forwarding",
    "pty",
    "restrict",
    "user-rc",
    "verify-required",
    "x11-forwarding",
];
const VALUE_OPTIONS: [&str; 8] =
    ["command", "environment", "expiry-time", "from", "permitlisten", "permitopen", "principals", "tunnel"];

/// Checks an options field: `name` or `name="value"` items, separated by commas outside quotes.
fn check_options(options: &str) -> Result<(), ()> {
    let mut rest = options;
    loop {
        let end = unquoted(rest, |c| c == ',').map_err(|_| ())?;
        check_option(&rest[..end.unwrap_or(rest.len())])?;
        match end {
            Some(comma) => rest = &rest[comma + 1..],
            None => return Ok(()),
        }
    }
}

fn check_option(option: &str) -> Result<(), ()> {
    match option.split_once('=') {
        None if FLAG_OPTIONS.contains(&option.to_ascii_lowercase().as_str()) => Ok(()),
        Some((name, value))
            if VALUE_OPTIONS.contains(&name.to_ascii_lowercase().as_str())
                && value.len() >= 2
                && value.starts_with('"')
                && value.ends_with('"') =>
        {
            Ok(())
        }
        _ => Err(()),
    }
}

/// Splits off the first whitespace-separated token of `text` (quote-aware, for options);
/// the rest keeps its inner spacing (a comment's).
fn split_token(text: &str) -> Result<(&str, &str), &'static str> {
    let text = text.trim_start();
    let end = unquoted(text, char::is_whitespace)?.unwrap_or(text.len());
    Ok((&text[..end], text[end..].trim_start()))
}

/// The byte index of the first character matching `stop` outside double quotes (where `\`
/// escapes the next character), or `None` when there is none.
fn unquoted(text: &str, stop: impl Fn(char) -> bool) -> Result<Option<usize>, &'static str> {
    let mut quoted = false;
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                chars.next();
            }
            c if !quoted && stop(c) => return Ok(Some(index)),
            _ => {}
        }
    }
    if quoted { Err("a quoted option value is not closed") } else { Ok(None) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPXlZ4JTyusciyfCFySh1v/NeY236hj/vsruki9yqyRe test-ed25519";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCzHyOMzh70rsCN41S0IMcCpA9UKdPCDfVVyT0q9c1n/aAKDHxHamdeIiDoYzKP1mJqgKVmA18bfXK/G+hUQm14Erjhvo/PPgw08uBKLkthAKpNYDgG8PnKPtlsNGBtXHwdUDH/Ap9+xKZxjlIA3g23qvkNYgXJLDem3gNTiPrtvw== test-rsa";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOIt4/3YBi1eeGERyovdDG1EFTUGcaBSb7fy5VG6L4TXkUz2PMgIYi8k7jk6+/Vgkc5KZsnTXh3OBsB1m/OcciI= test-ecdsa";

    /// The key data of a line given as `type base64 ...`.
    fn data(line: &str) -> &str {
        line.split(' ').nth(1).unwrap()
    }

    fn valid(line: &str) -> bool {
        matches!(check_line(line), Ok(Some(_)))
    }

    fn wire(fields: &[&[u8]]) -> String {
        let bytes: Vec<u8> = fields
            .iter()
            .flat_map(|f| (f.len() as u32).to_be_bytes().into_iter().chain(f.iter().copied()))
            .collect();
        Base64::encode_string(&bytes)
    }

    #[test]
    fn keys_made_by_ssh_keygen_are_valid_with_or_without_a_comment() {
        for line in [ED25519, RSA, ECDSA] {
            assert!(valid(line), "{line}");
            let without_comment = line.rsplit_once(' ').unwrap().0;
            assert!(valid(without_comment), "{without_comment}");
            assert!(valid(&format!("  {line}\r")), "surrounding blanks and a CR are ignored");
        }
        assert!(valid(&format!("{ED25519} a comment  with \"odd\" spacing")));
    }

    #[test]
    fn option_lines_are_valid_as_sshd_reads_them() {
        let key = ED25519.rsplit_once(' ').unwrap().0;
        for options in [
            "restrict",
            "no-pty,no-port-forwarding",
            "command=\"echo hi\"",
            "from=\"127.0.0.1,10.0.0.0/8\",no-pty",
            "command=\"sh -c \\\"echo a, b\\\"\",restrict",
            "environment=\"A=b c\",permitopen=\"localhost:80\",expiry-time=\"20300101\"",
            "RESTRICT,Pty",
        ] {
            assert!(valid(&format!("{options} {key}")), "{options} without a comment");
            assert!(valid(&format!("{options} {ED25519}")), "{options} with a comment");
        }
    }

    #[test]
    fn bad_lines_are_refused_with_their_reason() {
        // Reasons are `&'static str`: by their type they cannot quote the line.
        let (ty, data) = ("ssh-ed25519", data(ED25519));
        let cases = [
            ("ssh-foo AAAA", "neither a known key type"),
            ("hello world", "neither a known key type"),
            ("unknown-option ssh-ed25519 AAAA", "neither a known key type"),
            ("command=unquoted ssh-ed25519 AAAA", "neither a known key type"),
            ("command=\"never closed ssh-ed25519 AAAA", "not closed"),
            ("restrict,,no-pty ssh-ed25519 AAAA", "neither a known key type"),
            ("restrict ssh-foo AAAA", "no known key type"),
            ("restrict", "no known key type"),
            ("ssh-ed25519", "missing"),
            ("ssh-ed25519 not*base64", "not valid base64"),
            (&format!("ssh-rsa {data}"), "not a key of the type"),
            (&format!("{ty} {}", &data[..data.len() - 8]), "damaged"),
            (&format!("{ty} {}", &data[..data.len() - 7]), "not valid base64"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
        ];
        for (line, reason) in cases {
            let error = check_line(line).expect_err(line);
            assert!(error.contains(reason), "{line}: {error}");
        }
    }

    #[test]
    fn the_key_data_must_have_its_type_s_fields_and_nothing_more() {
        let point = [7u8; 32];
        assert!(valid(&format!("ssh-ed25519 {}", wire(&[b"ssh-ed25519", &point]))));
        assert!(!valid(&format!("ssh-ed25519 {}", wire(&[b"ssh-ed25519", &point[..31]]))));
        assert!(!valid(&format!("ssh-ed25519 {}", wire(&[b"ssh-ed25519", &point, b"x"]))));
        assert!(!valid(&format!("ssh-rsa {}", wire(&[b"ssh-rsa", b"\x01\x00\x01"]))));
        assert!(!valid(&format!(
            "ecdsa-sha2-nistp256 {}",
            wire(&[b"ecdsa-sha2-nistp256", b"nistp384", b"p"])
        )));
        let sk = wire(&[b"sk-ssh-ed25519@openssh.com", &point, b"ssh:"]);
        assert!(valid(&format!("no-touch-required sk-ssh-ed25519@openssh.com {sk} yubikey")));
        let sk = wire(&[b"sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", b"point", b"ssh:"]);
        assert!(valid(&format!("sk-ecdsa-sha2-nistp256@openssh.com {sk}")));
        // A length that runs past the end.
        let mut cut = (11u32).to_be_bytes().to_vec();
        cut.extend_from_slice(b"ssh-ed25519");
        cut.extend_from_slice(&64u32.to_be_bytes());
        cut.extend_from_slice(&point);
        assert!(!valid(&format!("ssh-ed25519 {}", Base64::encode_string(&cut))));
    }

    #[test]
    fn sources_merge_in_order_without_duplicates_and_skipped_lines_name_their_place() {
        let sources = [
            Source { name: "$SSH_PUBLIC_KEYS".into(), text: format!("{ED25519}\n\n# note\n{RSA}\n") },
            Source { name: "$PUBLIC_KEY".into(), text: format!("garbage line\r\nrestrict {ED25519}") },
            Source { name: "/keys".into(), text: format!("{ECDSA}\nssh-rsa {}\n", data(ED25519)) },
        ];
        let merged = merge(&sources);
        assert_eq!(merged.lines, [ED25519, RSA, ECDSA]);
        assert_eq!(merged.duplicates, 1, "the same key with options is still the same key");
        let skipped: Vec<String> =
            merged.skipped.iter().map(|s| format!("{}:{}", s.source, s.line)).collect();
        assert_eq!(skipped, ["$PUBLIC_KEY:1", "/keys:2"]);
        assert_eq!(
            merged.skipped[0].to_string(),
            "$PUBLIC_KEY line 1: skipped, it starts with neither a known key type nor valid options"
        );
    }
}

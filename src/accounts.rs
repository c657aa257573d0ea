//! /etc/passwd, read by our own parser.
//!
//! A static glibc binary must not call getpwnam and friends: they go through NSS, which
//! dlopens modules and a second libc into PID 1 (crates.md §3.3). The files format is simple
//! and is all a container has.

use std::fs;
use std::path::Path;

/// One line of /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// Parses passwd-format text, skipping comments and malformed lines.
pub fn parse_passwd(text: &str) -> Vec<Account> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Account> {
    if line.starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    let [name, _password, uid, gid, _gecos, home, shell] = fields.as_slice() else {
        return None;
    };
    Some(Account {
        name: (*name).to_string(),
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        home: (*home).to_string(),
        shell: (*shell).to_string(),
    })
}

/// The account with this uid in the passwd file at `path`, if the file and the entry exist.
pub fn by_uid(path: &Path, uid: u32) -> Option<Account> {
    let text = fs::read_to_string(path).ok()?;
    parse_passwd(&text).into_iter().find(|account| account.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_skips_junk() {
        let text = "root:x:0:0:root:/root:/bin/bash\n# comment\nbroken line\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\nbad:x:notanumber:0::/:/bin/sh\n";
        let accounts = parse_passwd(text);
        assert_eq!(accounts.len(), 2);
        assert_eq!(accounts[0].home, "/root");
        assert_eq!(accounts[1].uid, 65534);
        assert_eq!(accounts[1].shell, "/usr/sbin/nologin");
    }
}

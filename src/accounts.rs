//! /etc/passwd and /etc/group, read by our own parser.
//!
//! A static glibc binary must not call getpwnam and friends: they go through NSS, which
//! dlopens modules and a second libc into PID 1 (crates.md §3.3). The files format is simple
//! and is all a container has.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The identity a process is started with: the runtime calls setgroups, setgid and setuid with
/// these, in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the primary group, then every group of /etc/group that lists the
    /// user's name as a member (what initgroups(3) would set).
    pub groups: Vec<u32>,
}

/// Where the account databases are: /etc/passwd and /etc/group, or fixtures in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFiles {
    pub passwd: PathBuf,
    pub group: PathBuf,
}

impl Default for AccountFiles {
    fn default() -> Self {
        Self { passwd: PathBuf::from("/etc/passwd"), group: PathBuf::from("/etc/group") }
    }
}

impl AccountFiles {
    /// The accounts of the passwd file.
    pub fn users(&self) -> io::Result<Vec<Account>> {
        fs::read_to_string(&self.passwd).map(|text| parse_passwd(&text))
    }

    /// The groups of the group file.
    pub fn groups(&self) -> io::Result<Vec<Group>> {
        fs::read_to_string(&self.group).map(|text| parse_group(&text))
    }
}

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

/// One line of /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    /// User names listed as members (the group's supplementary members).
    pub members: Vec<String>,
}

/// Parses group-format text, skipping comments and malformed lines.
pub fn parse_group(text: &str) -> Vec<Group> {
    text.lines().filter_map(parse_group_line).collect()
}

fn parse_group_line(line: &str) -> Option<Group> {
    if line.starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    let [name, _password, gid, members] = fields.as_slice() else {
        return None;
    };
    Some(Group {
        name: (*name).to_string(),
        gid: gid.parse().ok()?,
        members: members.split(',').filter(|m| !m.is_empty()).map(str::to_string).collect(),
    })
}

/// The account with this uid in the passwd file at `path`, if the file and the entry exist.
/// Only the first line that parses with that uid becomes an account: this runs at every boot.
pub fn by_uid(path: &Path, uid: u32) -> Option<Account> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .filter(|line| line.split(':').nth(2).and_then(|field| field.parse::<u32>().ok()) == Some(uid))
        .find_map(parse_line)
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

    #[test]
    fn by_uid_finds_the_first_whole_entry_with_that_uid() {
        let scratch = crate::testing::Scratch::new("passwd");
        let passwd = scratch.write(
            "passwd",
            "root:x:0:0:root:/root:/bin/bash\nshort:x:1000:1000\nalice:x:1000:100::/home/alice:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        );
        assert_eq!(by_uid(&passwd, 1000).map(|a| a.name), Some("alice".to_string()));
        assert_eq!(by_uid(&passwd, 0).map(|a| a.home), Some("/root".to_string()));
        assert_eq!(by_uid(&passwd, 7), None);
        assert_eq!(by_uid(&scratch.path("missing"), 0), None);
    }

    #[test]
    fn parses_groups_and_members() {
        let text = "root:x:0:\n# comment\nvideo:x:44:alice,bob\nbroken\nbad:x:nan:\nrender:x:105:alice\n";
        let groups = parse_group(text);
        assert_eq!(groups.len(), 3);
        assert!(groups[0].members.is_empty());
        assert_eq!(
            groups[1],
            Group { name: "video".into(), gid: 44, members: vec!["alice".into(), "bob".into()] }
        );
        assert_eq!(groups[2].gid, 105);
    }
}

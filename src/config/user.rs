//! `user`: who a process runs as, resolved from the account files by our own parser (a static
//! PID 1 must not go through NSS: see `accounts.rs`).

use std::cell::OnceCell;

use crate::accounts::{Account, AccountFiles, Credentials, Group};

use super::suggest;

/// The account files, each read at most once, and only when a `user` needs it.
pub(super) struct AccountDb<'a> {
    files: &'a AccountFiles,
    users: OnceCell<Result<Vec<Account>, String>>,
    groups: OnceCell<Result<Vec<Group>, String>>,
}

impl<'a> AccountDb<'a> {
    pub(super) fn new(files: &'a AccountFiles) -> Self {
        Self { files, users: OnceCell::new(), groups: OnceCell::new() }
    }

    fn users(&self) -> &Result<Vec<Account>, String> {
        self.users.get_or_init(|| {
            self.files
                .users()
                .map_err(|error| format!("cannot read {}: {error}", self.files.passwd.display()))
        })
    }

    fn groups(&self) -> &Result<Vec<Group>, String> {
        self.groups.get_or_init(|| {
            self.files
                .groups()
                .map_err(|error| format!("cannot read {}: {error}", self.files.group.display()))
        })
    }
}

/// Resolves `user` as written in the config: `name`, `uid`, `name:group`, `uid:gid` (or any
/// mix). A name must be in the passwd file, a group name in the group file. Without a group,
/// the gid is the account's primary group, or 0 for a uid that has no account (as `docker run
/// --user` does).
pub(super) fn resolve(spec: &str, db: &AccountDb<'_>) -> Result<Credentials, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    if user_part.is_empty() {
        return Err("`user` is empty: write a name from /etc/passwd, or uid[:gid]".into());
    }
    let (uid, account) = user_id(user_part, db)?;
    let gid = match group_part {
        Some(group) => group_id(group, db)?,
        None => account.map_or(0, |account| account.gid),
    };
    let mut groups = vec![gid];
    if let (Some(account), Ok(all)) = (account, db.groups()) {
        let member_of = all.iter().filter(|g| g.members.contains(&account.name)).map(|g| g.gid);
        for gid in member_of {
            if !groups.contains(&gid) {
                groups.push(gid);
            }
        }
    }
    Ok(Credentials { uid, gid, groups })
}

/// The uid of a user name or number, and its account when it has one.
fn user_id<'db>(user: &str, db: &'db AccountDb<'_>) -> Result<(u32, Option<&'db Account>), String> {
    if let Some(number) = numeric(user) {
        let uid = number.map_err(|()| format!("uid {user} is out of range"))?;
        let account = db.users().as_ref().ok().and_then(|users| users.iter().find(|a| a.uid == uid));
        return Ok((uid, account));
    }
    let users = db.users().as_ref().map_err(|error| format!("{error} (needed to look up user `{user}`)"))?;
    match users.iter().find(|account| account.name == user) {
        Some(account) => Ok((account.uid, Some(account))),
        None => Err(not_found("user", user, &db.files.passwd, users.iter().map(|a| a.name.as_str()))),
    }
}

/// The gid of a group name or number.
fn group_id(group: &str, db: &AccountDb<'_>) -> Result<u32, String> {
    if group.is_empty() {
        return Err("the group after `:` is empty: write uid:gid, or leave out `:`".into());
    }
    if let Some(number) = numeric(group) {
        return number.map_err(|()| format!("gid {group} is out of range"));
    }
    let groups =
        db.groups().as_ref().map_err(|error| format!("{error} (needed to look up group `{group}`)"))?;
    match groups.iter().find(|g| g.name == group) {
        Some(found) => Ok(found.gid),
        None => Err(not_found("group", group, &db.files.group, groups.iter().map(|g| g.name.as_str()))),
    }
}

/// `Some` when `text` is all digits: the number, or `Err` when it does not fit an id.
fn numeric(text: &str) -> Option<Result<u32, ()>> {
    text.bytes().all(|b| b.is_ascii_digit()).then(|| text.parse().map_err(|_| ()))
}

fn not_found<'a>(
    kind: &str,
    name: &str,
    file: &std::path::Path,
    known: impl IntoIterator<Item = &'a str>,
) -> String {
    let hint = suggest::closest(name, known).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
    format!("{kind} `{name}` is not in {}{hint}", file.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::fixture_accounts;
    use std::path::PathBuf;

    fn resolved(spec: &str) -> Result<Credentials, String> {
        let (_dir, files) = fixture_accounts();
        resolve(spec, &AccountDb::new(&files))
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(
            resolved("alice").unwrap(),
            Credentials { uid: 1000, gid: 1000, groups: vec![1000, 44, 105] }
        );
        assert_eq!(
            resolved("1000").unwrap(),
            Credentials { uid: 1000, gid: 1000, groups: vec![1000, 44, 105] }
        );
        assert_eq!(
            resolved("alice:video").unwrap(),
            Credentials { uid: 1000, gid: 44, groups: vec![44, 105] }
        );
        assert_eq!(resolved("4242").unwrap(), Credentials { uid: 4242, gid: 0, groups: vec![0] });
        assert_eq!(resolved("4242:4243").unwrap(), Credentials { uid: 4242, gid: 4243, groups: vec![4243] });
        assert_eq!(resolved("root:0").unwrap(), Credentials { uid: 0, gid: 0, groups: vec![0] });
    }

    #[test]
    fn unknown_names_are_errors() {
        let (_dir, files) = fixture_accounts();
        let passwd = files.passwd.display().to_string();
        let group = files.group.display().to_string();
        let db = AccountDb::new(&files);
        assert_eq!(
            resolve("alcie", &db).unwrap_err(),
            format!("user `alcie` is not in {passwd}; did you mean `alice`?")
        );
        assert_eq!(
            resolve("alice:vidoe", &db).unwrap_err(),
            format!("group `vidoe` is not in {group}; did you mean `video`?")
        );
        assert_eq!(
            resolve("", &db).unwrap_err(),
            "`user` is empty: write a name from /etc/passwd, or uid[:gid]"
        );
        assert_eq!(
            resolve("1:", &db).unwrap_err(),
            "the group after `:` is empty: write uid:gid, or leave out `:`"
        );
        assert_eq!(resolve("99999999999", &db).unwrap_err(), "uid 99999999999 is out of range");
    }

    #[test]
    fn missing_files_matter_only_for_names() {
        let files = AccountFiles {
            passwd: PathBuf::from("/nonexistent/passwd"),
            group: PathBuf::from("/nonexistent/group"),
        };
        let db = AccountDb::new(&files);
        assert_eq!(
            resolve("1000:1000", &db).unwrap(),
            Credentials { uid: 1000, gid: 1000, groups: vec![1000] }
        );
        assert!(resolve("alice", &db).unwrap_err().starts_with("cannot read /nonexistent/passwd: "));
    }
}

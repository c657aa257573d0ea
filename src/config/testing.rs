//! Helpers shared by the config tests.

use crate::accounts::AccountFiles;

pub(super) use crate::testing::Scratch as Dir;

/// passwd and group files with root and alice (uid 1000, member of video and render).
pub(super) fn fixture_accounts() -> (Dir, AccountFiles) {
    let dir = Dir::new("accounts");
    let passwd =
        dir.write("passwd", "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n");
    let group = dir.write("group", "root:x:0:\nalice:x:1000:\nvideo:x:44:alice,bob\nrender:x:105:alice\n");
    (dir, AccountFiles { passwd, group })
}

//! Command strings the shell would only split into words and execute.
//!
//! `command: "exec sleep 1000"` costs a shell per start: `/bin/sh` is loaded, parses the line
//! and execs `sleep`. When the line has nothing for a shell to interpret (no quoting,
//! expansion, redirection, operator, builtin or keyword, and no variable assignment), the
//! outcome is the same as executing its words directly, which is what the init then does, as
//! supervisord and systemd always do. The one trace the shell leaves, `PWD` in the program's
//! environment, is set by the planner for such commands. A configured `shell` is always used.

/// The argv the shell would have executed for `command`, or `None` when the shell has more to
/// do than that. A leading `exec` is dropped: the shell would replace itself with the program
/// with or without it.
pub fn argv(command: &str) -> Option<Vec<String>> {
    let mut words: Vec<&str> = command.split([' ', '\t']).filter(|word| !word.is_empty()).collect();
    if words.first() == Some(&"exec") && words.get(1).is_some_and(|next| !next.starts_with('-')) {
        words.remove(0);
    }
    let program = words.first()?;
    let plain = words.iter().all(|word| word.bytes().all(plain_byte));
    let runs_a_program = !program.contains('=') && !SHELL_WORDS.contains(program);
    (plain && runs_a_program).then(|| words.iter().map(|word| word.to_string()).collect())
}

/// Bytes that mean nothing to a POSIX shell inside a word.
fn plain_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&byte)
}

/// Reserved words and builtins of POSIX shells (dash's set, which includes bash's common
/// ones): as the first word the shell acts on them itself instead of executing a program.
const SHELL_WORDS: &[&str] = &[
    "!", ".", ":", "[", "alias", "bg", "break", "case", "cd", "chdir", "command", "continue", "do", "done",
    "echo", "elif", "else", "esac", "eval", "exec", "exit", "export", "false", "fc", "fg", "fi", "for",
    "getopts", "hash", "if", "in", "jobs", "kill", "local", "printf", "pwd", "read", "readonly", "return",
    "set", "shift", "source", "test", "then", "times", "trap", "true", "type", "ulimit", "umask", "unalias",
    "unset", "until", "wait", "while",
];

#[cfg(test)]
mod tests {
    use super::argv;

    #[test]
    fn plain_words_are_executed_directly() {
        assert_eq!(argv("exec sleep 1000").unwrap(), ["sleep", "1000"]);
        assert_eq!(argv("sleep 1000").unwrap(), ["sleep", "1000"]);
        assert_eq!(
            argv("  python3\t-m http.server 8080 --bind=0.0.0.0 ").unwrap(),
            ["python3", "-m", "http.server", "8080", "--bind=0.0.0.0"]
        );
        assert_eq!(argv("/usr/sbin/sshd -D -e -f /etc/ssh/sshd_config").unwrap()[0], "/usr/sbin/sshd");
    }

    #[test]
    fn anything_the_shell_interprets_stays_with_the_shell() {
        for command in [
            "echo $HOME",
            "serve > /var/log/out",
            "a && b",
            "a; b",
            "a | b",
            "sleep 1 &",
            "run 'quoted arg'",
            "run \"quoted\"",
            "run a\\ b",
            "ls *.txt",
            "ls ~/x",
            "run # comment",
            "FOO=1 run",
            "run `date`",
            "(subshell)",
            "run\nsecond",
            "cd /tmp",
            "exit 3",
            "exec",
            "exec -a name sleep 1",
            "if true",
            "kill -TERM 1",
            "run héllo",
            "",
            "   ",
        ] {
            assert_eq!(argv(command), None, "{command:?}");
        }
    }
}

//! Bad configuration, as the init sees it at boot and `nix2gpu-init check` reports it: always
//! exit 78 with file:line:col, never a panic, never a half-started container.

use init_tests::{Launch, config_file, init_binary};

/// Documents that must each be rejected, with the line the error must point at.
const MALFORMED: &[(&str, usize)] = &[
    ("processes:\n\tweb: {command: x}\n", 2),
    ("processes:\n  web:\n    command: \"unclosed\n", 4),
    ("processes: [\n", 2),
    ("processes:\n  web: {command: x}\n  web: {command: y}\n", 3),
    ("processes:\n  web:\n    command: 42\n    depends_on: 7\n", 4),
    ("processes:\n  web:\n    commnd: x\n", 3),
    ("processes:\n  web:\n    command: x\n    is_tty: true\n", 4),
    ("processes:\n  web:\n    command: x\n    depends_on: {db: {condition: process_started}}\n", 4),
    ("- just\n- a list\n", 1),
    ("processes:\n  web:\n    command: x\n    availability: {max_restarts: 99999999999999999999}\n", 4),
    ("\u{0}\u{1}binary garbage\u{7f}", 1),
];

#[test]
fn malformed_configs_exit_78_with_a_location_and_never_start_anything() {
    for (yaml, line) in MALFORMED {
        let config = config_file(yaml);
        let mut init = Launch::new(&["--config", config.path(), "--", "sh", "-c", "echo MAIN RAN"]).start();
        assert_eq!(init.wait_exit(), 78, "{yaml:?}: {:?}", init.output());
        let output = init.output().join("\n");
        assert!(
            output.contains(&format!("{}:{line}:", config.path())),
            "{yaml:?} must point at line {line}:\n{output}"
        );
        assert!(!output.contains("MAIN RAN"), "nothing may start with a bad config");
        assert!(!output.contains("panicked"), "{output}");
    }
}

#[test]
fn check_reports_every_error_not_just_the_first() {
    let config = config_file(
        "processes:\n  a:\n    command: x\n    depends_on: {b: {}}\n  b:\n    command: y\n    depends_on: {a: {}}\n  \
         c:\n    command: z\n    depends_on: {nope: {}}\n    restart_policy: always\n",
    );
    let output = std::process::Command::new(init_binary())
        .args(["check", "--config", config.path()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("a -> b -> a") || stderr.contains("b -> a -> b"), "cycle printed: {stderr}");
    assert!(stderr.contains("`nope`"), "undefined dependency: {stderr}");
    assert!(stderr.contains("restart_policy"), "unsupported key: {stderr}");
    assert!(stderr.lines().filter(|l| l.starts_with(config.path())).count() >= 3, "{stderr}");
}

#[test]
fn a_valid_config_checks_clean_and_schema_is_json() {
    let config = config_file("processes:\n  web:\n    command: echo hi\n");
    let output = std::process::Command::new(init_binary())
        .args(["check", "--config", config.path()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let schema = std::process::Command::new(init_binary()).arg("schema").output().unwrap();
    assert_eq!(schema.status.code(), Some(0));
    let text = String::from_utf8_lossy(&schema.stdout);
    assert!(text.trim_start().starts_with('{') && text.contains("\"processes\""), "{text}");
}

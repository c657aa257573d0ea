//! The Nix wrapper in images/, with Debian's nix-bin and without nixpkgs: every .nix file
//! parses; the pure functions (lib/config.nix, lib/image-config.nix, lib/accounts.nix) give
//! what they should; each example's configuration matches its golden file and passes
//! `nix2gpu-init check`; and a configuration made by lib/config.nix runs as it was written.
//!
//! nix-instantiate runs with `--store dummy://`: evaluation only, nothing is written to /nix
//! (which need not exist) and no daemon is needed. Without nix-instantiate the tests fail.
//! `UPDATE_GOLDEN=1` rewrites images/tests/golden/*.json from the examples.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use init_tests::{Launch, config_file, init_binary, position, split_service_line};
use serde_json::{Value, json};

fn images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../images").canonicalize().expect("images/ exists")
}

/// nix-instantiate with these arguments, evaluating only.
fn nix_instantiate(args: &[&str]) -> Output {
    Command::new("nix-instantiate")
        .args(["--store", "dummy://"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run nix-instantiate (apt-get install nix-bin): {e}"))
}

/// A Nix string literal naming `path` (absolute, so it means the same from anywhere).
fn nix_path(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).expect("a string serializes")
}

/// A Nix expression for the file `images/<file>`, imported.
fn import(file: &str) -> String {
    format!("(import {})", nix_path(&images().join(file)))
}

/// Evaluates `expression` strictly to JSON.
fn eval(expression: &str) -> Value {
    let output = nix_instantiate(&["--eval", "--strict", "--json", "--expr", expression]);
    assert!(output.status.success(), "{expression}\nfailed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("nix-instantiate --json prints JSON")
}

/// Evaluates `expression`, which must fail; returns the error.
fn eval_error(expression: &str) -> String {
    let output = nix_instantiate(&["--eval", "--strict", "--json", "--expr", expression]);
    assert!(
        !output.status.success(),
        "{expression}\nshould fail, gave: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The configuration lib/config.nix makes of these settings (a Nix attrset).
fn config_of(settings: &str) -> Value {
    eval(&format!("{} {settings}", import("lib/config.nix")))
}

fn nix_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            nix_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "nix") {
            found.push(path);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let mut files = Vec::new();
    nix_files(&images(), &mut files);
    let names: Vec<String> =
        files.iter().map(|f| f.strip_prefix(images()).unwrap().display().to_string()).collect();
    for expected in ["flake.nix", "flake-module.nix", "package.nix", "modules/image.nix", "lib/config.nix"] {
        assert!(names.iter().any(|n| n == expected), "{expected} is among {names:?}");
    }
    for file in &files {
        let output = nix_instantiate(&["--parse", file.to_str().expect("UTF-8 path")]);
        assert!(output.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&output.stderr));
    }
}

#[test]
fn examples_match_their_golden_configs_and_pass_check() {
    let examples = images().join("examples");
    let golden = images().join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0");
    let mut names: Vec<String> = fs::read_dir(&examples)
        .expect("images/examples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "nix"))
        .map(|p| p.file_stem().expect("a file name").to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 4, "the examples: {names:?}");

    for name in &names {
        let example = examples.join(format!("{name}.nix"));
        let config =
            eval(&format!("{} {{ example = {}; }}", import("tests/eval-example.nix"), nix_path(&example)));
        let text = serde_json::to_string_pretty(&config).expect("JSON") + "\n";
        let golden_file = golden.join(format!("{name}.json"));
        if update {
            fs::write(&golden_file, &text).expect("golden dir is writable");
        }
        let expected: Value = serde_json::from_str(
            &fs::read_to_string(&golden_file)
                .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", golden_file.display())),
        )
        .expect("golden files are JSON");
        assert_eq!(config, expected, "{name}: the configuration differs from {}", golden_file.display());

        let file = config_file(&text);
        let check = Command::new(init_binary()).args(["check", "--config", file.path()]).output().unwrap();
        assert_eq!(
            check.status.code(),
            Some(0),
            "{name}: nix2gpu-init check rejects the configuration:\n{}{text}",
            String::from_utf8_lossy(&check.stderr)
        );
    }

    let mut goldens: Vec<String> = fs::read_dir(&golden)
        .expect("images/tests/golden")
        .map(|e| e.expect("entry").path().file_stem().expect("a file name").to_string_lossy().into_owned())
        .collect();
    goldens.sort();
    assert_eq!(goldens, names, "one golden file per example, no stale ones");
}

#[test]
fn services_become_processes_whose_argv_is_taken_literally() {
    let config = config_of(
        r#"{
          services.web = {
            process.argv = [ "server" "--home=$HOME" "\${PORT}" ];
            services.metrics.process.argv = [ "exporter" ];
          };
          serviceConfigDirs.web = "/nix/store/abc-service-web-config";
          processes.web = {
            depends_on.db.condition = "process_healthy";
            readiness_probe.tcp_socket.port = 8080;
            environment = [ "A=1" ];
          };
          processes.db.command = "db --port $PORT";
        }"#,
    );
    assert_eq!(
        config,
        json!({
            "nix2gpu": {},
            "processes": {
                "db": {"command": "db --port $PORT"},
                "web": {
                    "entrypoint": ["server", "--home=$$HOME", "$${PORT}"],
                    "environment": ["XDG_CONFIG_HOME=/nix/store/abc-service-web-config", "A=1"],
                    "depends_on": {"db": {"condition": "process_healthy"}},
                    "readiness_probe": {"tcp_socket": {"port": 8080}}
                },
                "web-metrics": {"entrypoint": ["exporter"]}
            }
        })
    );
}

#[test]
fn the_startup_script_runs_first_and_everything_else_waits_for_it() {
    let config = config_of(
        r#"{
          extraStartupScript = "echo $HOME\n";
          services.web.process.argv = [ "server" ];
          processes.db.command = "db";
          processes.late = { command = "late"; depends_on.startup.condition = "process_started"; };
        }"#,
    );
    let processes = &config["processes"];
    assert_eq!(
        processes["startup"]["entrypoint"],
        json!(["/bin/bash", "-euo", "pipefail", "-c", "echo $$HOME\n", "startup"])
    );
    let after_startup = json!({"startup": {"condition": "process_completed_successfully"}});
    assert_eq!(processes["web"]["depends_on"], after_startup);
    assert_eq!(processes["db"]["depends_on"], after_startup);
    assert_eq!(processes["late"]["depends_on"], json!({"startup": {"condition": "process_started"}}));
    assert_eq!(config_of("{ processes.db.command = \"db\"; }")["processes"]["db"], json!({"command": "db"}));
}

#[test]
fn nix2gpus_tailscale_option_becomes_the_auth_key_file_setting() {
    let config = config_of(
        r#"{
          tailscale = { enable = true; authKey = "/run/secrets/ts"; };
          nix2gpu = { tailscale.hostname = "box"; health.listen = "0.0.0.0:9100"; };
          extraConfig.log_level = "debug";
        }"#,
    );
    assert_eq!(
        config,
        json!({
            "log_level": "debug",
            "nix2gpu": {
                "tailscale": {"enable": true, "auth_key_file": "/run/secrets/ts", "hostname": "box"},
                "health": {"listen": "0.0.0.0:9100"}
            },
            "processes": {}
        })
    );
    assert_eq!(config_of("{ tailscale.enable = false; tailscale.authKey = \"/k\"; }")["nix2gpu"], json!({}));
    assert_eq!(config_of("{ tailscale.enable = true; }")["nix2gpu"], json!({"tailscale": {"enable": true}}));
}

#[test]
fn conflicting_settings_are_errors_that_say_what_to_do() {
    let config = import("lib/config.nix");
    let cases = [
        (
            r#"{ services.web.process.argv = [ "a" ]; processes.web.command = "b"; }"#,
            "processes.web sets `command`, but the service `web` already gives its argv",
        ),
        (
            r#"{ services.a-b.process.argv = [ "x" ]; services.a = { process.argv = [ "y" ]; services.b.process.argv = [ "z" ]; }; }"#,
            "two services both become the process `a-b`",
        ),
        (
            r#"{ extraStartupScript = "x"; processes.startup.command = "y"; }"#,
            "`startup` is the process that runs extraStartupScript",
        ),
        (
            r#"{ extraConfig.processes = { }; }"#,
            "extraConfig.processes: set it through the `processes` option",
        ),
        (
            r#"{ services.web.process.argv = [ ]; }"#,
            "services.web.process.argv must be a non-empty list of strings",
        ),
        (
            r#"{ services.web.services.sub = { }; services.web.process.argv = [ "a" ]; }"#,
            "services.web.services.sub: a service needs `process.argv`",
        ),
    ];
    for (settings, message) in cases {
        let error = eval_error(&format!("{config} {settings}"));
        assert!(error.contains(message), "{settings}: expected {message:?} in:\n{error}");
    }
}

#[test]
fn the_image_environment_keeps_the_fhs_directories_on_path() {
    let image = import("lib/image-config.nix");
    let oci = |extra: &str| {
        format!(
            "{image}.ociConfig {{ init = \"/nix/store/x-nix2gpu-init/bin/nix2gpu-init\"; configFile = \"/etc/nix2gpu/config.json\"; \
             env = {image}.defaultEnv {{ localeArchive = \"/locale-archive\"; }}; labels = {image}.defaultLabels; \
             exposedPorts = {{ }}; user = \"root\"; workingDir = \"/root\"; {extra} }}"
        )
    };
    let config = eval(&oci("extraLabels.extra = \"1\";"));
    let env: Vec<&str> = config["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).expect("PATH is set");
    let dirs: Vec<&str> = path.split(':').collect();
    for dir in ["/usr/bin", "/bin", "/usr/local/nvidia/bin", "/sbin"] {
        assert!(dirs.contains(&dir), "{dir} on {path}");
    }
    assert!(env.contains(&"NIX2GPU_CONFIG=/etc/nix2gpu/config.json"), "{env:?}");
    assert!(env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"), "{env:?}");
    assert_eq!(config["Entrypoint"], json!(["/nix/store/x-nix2gpu-init/bin/nix2gpu-init"]));
    assert_eq!(config["Labels"]["extra"], "1");
    assert_eq!(config["Labels"]["ai.vast.runtime"], "nix2gpu");

    // nix2gpu's systemPackages PATH replaced the whole PATH; ours refuses a PATH without them.
    let error = eval_error(&oci("extraEnv.PATH = \"/opt/bin:/usr/bin\";"));
    assert!(error.contains("the image PATH must keep /bin"), "{error}");
    let error = eval_error(&oci("extraEnv.\"BAD-NAME\" = \"x\";"));
    assert!(error.contains("`BAD-NAME` is not a valid environment variable name"), "{error}");
    let error = eval_error(&oci("extraEnv.NIX2GPU_CONFIG = \"/x\";"));
    assert!(error.contains("NIX2GPU_CONFIG is set by the image"), "{error}");
}

#[test]
fn exposed_ports_follow_the_ssh_and_health_settings() {
    let ports =
        |nix2gpu: &str| eval(&format!("{}.defaultExposedPorts {nix2gpu}", import("lib/image-config.nix")));
    assert_eq!(ports("{ }"), json!({"22/tcp": {}}));
    assert_eq!(
        ports(r#"{ ssh.port = 2222; health.listen = "[::]:9100"; }"#),
        json!({"2222/tcp": {}, "9100/tcp": {}})
    );
    assert_eq!(ports("{ ssh.enable = false; }"), json!({}));
}

#[test]
fn accounts_list_group_members_and_leave_root_unlocked_for_keys() {
    let accounts = eval(&format!(
        "{} {{ shell = \"/bin/bash\"; nologin = \"/sbin/nologin\"; }}",
        import("lib/accounts.nix")
    ));
    let passwd = accounts["passwd"].as_str().unwrap();
    let group = accounts["group"].as_str().unwrap();
    let shadow = accounts["shadow"].as_str().unwrap();
    assert!(passwd.starts_with("root:x:0:0:System administrator:/root:/bin/bash\n"), "{passwd}");
    assert!(passwd.contains("\nsshd:x:74:74:"), "{passwd}");
    assert_eq!(passwd.lines().count(), 3 + 32);
    let builders: Vec<String> = (1..=32).map(|n| format!("nixbld{n}")).collect();
    assert!(group.contains(&format!("\nnixbld:x:30000:{}\n", builders.join(","))), "{group}");
    assert!(group.contains("\nnogroup:x:65534:nobody\n"), "{group}");
    assert!(shadow.starts_with("root:*:"), "root has no password but is not locked: {shadow}");
    assert!(shadow.contains("\nsshd:!:"), "{shadow}");
}

/// The escaping is checked where it matters: the init runs a configuration made by
/// lib/config.nix, and bash and the service see exactly what was written in Nix.
#[test]
fn a_generated_configuration_runs_as_written() {
    let config = config_of(
        r#"{
          extraStartupScript = ''
            word=hello
            echo "startup: ''${word} $word ''${#word} $(echo sub)"
          '';
          services.echo.process.argv = [ "sh" "-c" "echo \"argv: $0 $1\"" "literal-$HOME" "\${x}" ];
        }"#,
    );
    let file = config_file(&config.to_string());
    let mut init = Launch::new(&["--config", file.path()]).start();
    assert_eq!(init.wait_exit(), 0, "{:?}", init.output());
    let output = init.output().to_vec();
    let startup: Vec<String> = output.iter().filter_map(|l| split_service_line(l, "startup")).collect();
    let echo: Vec<String> = output.iter().filter_map(|l| split_service_line(l, "echo")).collect();
    assert_eq!(startup, ["startup: hello hello 5 sub"], "{output:?}");
    assert_eq!(echo, ["argv: literal-$HOME ${x}"], "{output:?}");
    assert!(position(&output, "startup: hello") < position(&output, "argv: literal"), "{output:?}");
}

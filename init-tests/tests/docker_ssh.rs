//! vast.ai and RunPod in the local Docker engine: a container started with the variables each
//! platform sets (`VAST_CONTAINERLABEL` and `SSH_PUBLIC_KEY`; `RUNPOD_POD_ID` and `PUBLIC_KEY`)
//! on a user-defined network must say which platform it is on, run the `sshd` built-in (on by
//! itself: a key was given), and let an SSH client in a second container on the same network
//! log in with the matching private key. The client is the image's own OpenSSH `ssh`, run as
//! that container's entrypoint, so its output and exit status are the client's.

use std::process::Command;

use init_tests::docker::{Container, Network, Scratch, json, read_only_mount, text, unique_name};

/// Nothing but what the platform's variables turn on.
const NO_SERVICES: &str = "processes: {}\n";

/// A key pair made by ssh-keygen in `dir`: (private key file, public key line).
fn key_pair(dir: &Scratch, name: &str) -> (std::path::PathBuf, String) {
    let private = dir.path(name);
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private)
        .status()
        .expect("ssh-keygen (Debian's openssh-client) runs");
    assert!(made.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
    (private, public.trim().to_string())
}

/// What an `ssh` client said and its exit status.
struct Login {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `command` on `server` as root over SSH from a second container on `network`, with the
/// private key `key`, and waits (bounded) for the client to finish.
fn ssh_from_another_container(
    network: &Network,
    server: &Container,
    key: &std::path::Path,
    command: &str,
) -> Login {
    let mount = read_only_mount(key, "/key");
    let destination = format!("root@{}", server.name);
    let client = Container::run(
        &["--network", &network.name, "-v", &mount, "--entrypoint", "/usr/bin/ssh"],
        &[
            "-i",
            "/key",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            &destination,
            command,
        ],
    );
    let code = client.wait_for_exit();
    let output = client.output();
    Login {
        code,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The scenario for one platform: `platform` are its marker variables, `key_var` the variable
/// it puts the user's public key in, `kind` and `evidence` what detection must say.
fn platform_login(platform: &[&str], key_var: &str, kind: &str, evidence: &str) {
    let keys = Scratch::new(&unique_name());
    let (key, public) = key_pair(&keys, "client");
    let (stranger, _) = key_pair(&keys, "stranger");
    let network = Network::create();
    let key_env = format!("{key_var}={public}");
    let mut options = vec!["--network", network.name.as_str(), "-e", key_env.as_str()];
    for var in platform {
        options.extend(["-e", var]);
    }
    let server = Container::start(NO_SERVICES, &options);
    // The HEALTHCHECK turns healthy when every node is ready: here, sshd listening.
    server.wait_for_event("health_status: healthy");

    let detected = json(&server.exec(&["nix2gpu-init", "detect", "--json"]));
    assert_eq!(detected["kind"], kind, "{detected}");
    assert_eq!(detected["evidence"], evidence, "{detected}");
    let status = json(&server.exec(&["nix2gpu-init", "status", "--json"]));
    assert_eq!(status["platform"], detected, "the init detected what `detect` does: {status}");
    let nodes = status["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["sshd"], "only the sshd built-in runs: {status}");
    assert_eq!(nodes[0]["state"], "ready", "{status}");
    let logs = server.logs();
    assert!(logs.contains(&format!("init | platform: {kind} (evidence: {evidence}")), "{logs}");
    assert!(logs.contains("sshd | 1 authorized key(s) in /root/.ssh/authorized_keys"), "{logs}");

    // What sshd needs of the image and of the boot: the privilege-separation user, /run/sshd
    // made by the init, root with no password (`*`: keys only), the keys file private.
    let needs = server.exec(&[
        "sh",
        "-c",
        "grep -c '^sshd:' /etc/passwd; stat -c '%a %U' /run/sshd; grep '^root:' /etc/shadow | cut -d: -f2; \
         stat -c '%a' /root/.ssh /root/.ssh/authorized_keys",
    ]);
    assert_eq!(text(&needs).lines().collect::<Vec<_>>(), ["1", "755 root", "*", "700", "600"], "{needs:?}");

    let hostname = server.inspect("{{.Config.Hostname}}");
    let login = ssh_from_another_container(&network, &server, &key, "echo hello from $(hostname); exit 7");
    assert_eq!(login.code, 7, "the remote command's status comes back: {}", login.stderr);
    assert_eq!(login.stdout, format!("hello from {hostname}\n"), "{}", login.stderr);
    assert!(server.logs().contains("sshd | Accepted publickey for root"), "{}", server.logs());

    let refused = ssh_from_another_container(&network, &server, &stranger, "echo in");
    assert_eq!(refused.code, 255, "a key that was not given is refused: {}", refused.stdout);
    assert!(refused.stderr.contains("Permission denied (publickey)"), "{}", refused.stderr);
    assert_eq!(refused.stdout, "");
}

#[test]
fn vast_ai_is_detected_and_its_ssh_public_key_logs_in_from_another_container() {
    platform_login(&["VAST_CONTAINERLABEL=C.123"], "SSH_PUBLIC_KEY", "vast", "VAST_CONTAINERLABEL");
}

#[test]
fn runpod_is_detected_and_its_public_key_logs_in_from_another_container() {
    platform_login(&["RUNPOD_POD_ID=abc"], "PUBLIC_KEY", "runpod", "RUNPOD_POD_ID");
}

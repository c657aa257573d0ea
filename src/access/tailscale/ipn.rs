//! The pieces of tailscale's IPN protocol the node reads and writes: the LocalAPI's status
//! answer, the `ipn.Options` body of `start`, the notifications of the IPN bus, and the report
//! the node leaves for `nix2gpu-init status`.
//!
//! tailscale's JSON uses its Go field names (`BackendState`, `TailscaleIPs`, ...). Every field
//! read here is optional, so a tailscaled newer or older than the one these were read from
//! (tailscale's `ipn/backend.go`, `ipn/prefs.go`, `ipn/ipnstate`) still parses.

use serde::{Deserialize, Serialize};

use crate::config::builtins::TailscaleNode;

/// The coordination server `tailscale up` logs in to unless told otherwise.
const CONTROL_URL: &str = "https://controlplane.tailscale.com";
/// `preftype.NetfilterOn`, the default of `tailscale up` on Linux (it matters only with a TUN).
const NETFILTER_ON: u8 = 2;

/// `ipn.NotifyInitialState`: the first notification of a watch carries the current state.
pub const NOTIFY_INITIAL_STATE: u64 = 1 << 1;

/// `ipn.State`'s names, indexed by the number the IPN bus sends (the status endpoint sends the
/// name itself).
const STATE_NAMES: [&str; 7] =
    ["NoState", "InUseOtherUser", "NeedsLogin", "NeedsMachineAuth", "Stopped", "Starting", "Running"];

pub const RUNNING: &str = "Running";

/// The name of the bus's state number, like the status endpoint says it.
pub fn state_name(state: u64) -> String {
    usize::try_from(state)
        .ok()
        .and_then(|index| STATE_NAMES.get(index))
        .map_or_else(|| format!("state {state}"), |name| name.to_string())
}

/// Whether a backend in `state` waits for someone to call `start`: logged out, stopped, or not
/// started at all. Anything else (Starting, NeedsMachineAuth, Running) is on its way already.
pub fn needs_start(state: &str) -> bool {
    matches!(state, "NoState" | "NeedsLogin" | "Stopped")
}

/// `GET /localapi/v0/status` (ipnstate.Status), the parts the node uses.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Status {
    #[serde(rename = "BackendState")]
    pub backend_state: String,
    /// Whether the node has logged in before (its key is in the state file): only then does
    /// `start` alone bring it up; a new node must also be told to log in.
    #[serde(rename = "HaveNodeKey")]
    pub have_node_key: bool,
    #[serde(rename = "TailscaleIPs")]
    pub tailscale_ips: Option<Vec<String>>,
    #[serde(rename = "Self")]
    pub self_node: Option<Peer>,
    #[serde(rename = "MagicDNSSuffix")]
    pub magic_dns_suffix: String,
    #[serde(rename = "CurrentTailnet")]
    pub current_tailnet: Option<Tailnet>,
}

/// ipnstate.PeerStatus, for this machine.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Peer {
    #[serde(rename = "HostName")]
    pub host_name: String,
    #[serde(rename = "DNSName")]
    pub dns_name: String,
}

/// ipnstate.TailnetStatus.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Tailnet {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "MagicDNSSuffix")]
    pub magic_dns_suffix: String,
}

/// One `ipn.Notify` from the IPN bus, the parts the node acts on.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Notify {
    #[serde(rename = "State")]
    pub state: Option<u64>,
    /// A critical error, such as control refusing the auth key.
    #[serde(rename = "ErrMessage")]
    pub err_message: Option<String>,
    /// Where a person logs the machine in, when no auth key was given.
    #[serde(rename = "BrowseToURL")]
    pub browse_to_url: Option<String>,
}

/// The body of `POST /localapi/v0/start` (ipn.Options): the auth key and the prefs.
///
/// tailscaled decodes `UpdatePrefs` into a whole ipn.Prefs, so a pref left out is not "kept":
/// it becomes Go's zero value. Every pref `tailscale up` sets by default is therefore sent, with
/// its default unless the config says otherwise (MagicDNS on, netfilter on, stateful filtering
/// off).
pub fn start_body(key: Option<&str>, node: &TailscaleNode) -> serde_json::Value {
    serde_json::json!({
        "AuthKey": key.unwrap_or(""),
        "UpdatePrefs": {
            "ControlURL": CONTROL_URL,
            "WantRunning": true,
            "Hostname": node.hostname.as_deref().unwrap_or(""),
            "AdvertiseTags": node.tags,
            "RunSSH": node.ssh,
            "RouteAll": node.accept_routes,
            "CorpDNS": true,
            "NetfilterMode": NETFILTER_ON,
            "NoStatefulFiltering": true,
        },
    })
}

/// What the node leaves in its report file for `status`: never the key.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Report {
    pub backend_state: String,
    /// The tailnet's name, as the admin console shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tailnet: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub magic_dns_suffix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The machine's MagicDNS name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    pub ips: Vec<String>,
    /// Why the login failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// The report of a backend in `state` that has nothing else to show yet.
    pub fn state(state: &str) -> Self {
        Self { backend_state: state.to_string(), ..Self::default() }
    }

    /// The report of what the status endpoint said.
    pub fn from_status(status: &Status) -> Self {
        let some = |text: &str| (!text.is_empty()).then(|| text.trim_end_matches('.').to_string());
        let tailnet = status.current_tailnet.as_ref();
        let magic_dns_suffix =
            tailnet.map_or(status.magic_dns_suffix.as_str(), |t| t.magic_dns_suffix.as_str());
        Self {
            backend_state: status.backend_state.clone(),
            tailnet: tailnet.and_then(|t| some(&t.name)),
            magic_dns_suffix: some(magic_dns_suffix).or_else(|| some(&status.magic_dns_suffix)),
            hostname: status.self_node.as_ref().and_then(|s| some(&s.host_name)),
            dns_name: status.self_node.as_ref().and_then(|s| some(&s.dns_name)),
            ips: status.tailscale_ips.clone().unwrap_or_default(),
            error: None,
        }
    }

    /// One line for the log: `tailnet example.com (tail1234.ts.net), gpu-box, 100.64.0.1`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(tailnet) = &self.tailnet {
            match &self.magic_dns_suffix {
                Some(suffix) => parts.push(format!("tailnet {tailnet} ({suffix})")),
                None => parts.push(format!("tailnet {tailnet}")),
            }
        }
        parts.extend(self.dns_name.clone().or_else(|| self.hostname.clone()));
        if !self.ips.is_empty() {
            parts.push(self.ips.join(" "));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn node() -> TailscaleNode {
        TailscaleNode {
            auth_key_file: None,
            hostname: Some("gpu-box".into()),
            state_dir: PathBuf::from("/var/lib/tailscale"),
            socket: PathBuf::from("/run/tailscale/tailscaled.sock"),
            userspace_networking: true,
            ssh: true,
            tags: vec!["tag:gpu".into()],
            accept_routes: false,
            tailscaled: "tailscaled".into(),
            report_file: PathBuf::from("/run/nix2gpu/tailscale.json"),
        }
    }

    #[test]
    fn the_start_body_carries_the_key_and_every_pref() {
        let body = start_body(Some("tskey-auth-1"), &node());
        assert_eq!(body["AuthKey"], "tskey-auth-1");
        let prefs = &body["UpdatePrefs"];
        assert_eq!(prefs["Hostname"], "gpu-box");
        assert_eq!(prefs["AdvertiseTags"], serde_json::json!(["tag:gpu"]));
        assert_eq!(prefs["RunSSH"], true);
        assert_eq!(prefs["RouteAll"], false);
        assert_eq!(prefs["WantRunning"], true);
        assert_eq!(prefs["CorpDNS"], true);
        assert_eq!(prefs["ControlURL"], CONTROL_URL);
        // Without a key (a person logs in through the URL tailscaled prints), and without a
        // hostname (tailscaled then uses the machine's).
        let body = start_body(None, &TailscaleNode { hostname: None, ..node() });
        assert_eq!(body["AuthKey"], "");
        assert_eq!(body["UpdatePrefs"]["Hostname"], "");
    }

    #[test]
    fn bus_states_are_numbers_and_get_their_names() {
        let notify: Notify =
            serde_json::from_str(r#"{"Version":"1.80.0","State":6,"SessionID":"x"}"#).unwrap();
        assert_eq!(notify.state.map(state_name).as_deref(), Some(RUNNING));
        assert_eq!(state_name(2), "NeedsLogin");
        assert_eq!(state_name(99), "state 99");
        let notify: Notify =
            serde_json::from_str(r#"{"ErrMessage":"invalid key: unable to validate API key"}"#).unwrap();
        assert_eq!(notify.state, None);
        assert_eq!(notify.err_message.as_deref(), Some("invalid key: unable to validate API key"));
        assert!(needs_start("NeedsLogin") && needs_start("Stopped") && needs_start("NoState"));
        assert!(!needs_start("Starting") && !needs_start(RUNNING) && !needs_start("NeedsMachineAuth"));
    }

    #[test]
    fn the_report_takes_what_status_says_and_tolerates_nulls() {
        let status: Status = serde_json::from_str(
            r#"{"Version":"1.80.0","BackendState":"Running","HaveNodeKey":true,
                "TailscaleIPs":["100.101.102.103","fd7a:115c:a1e0::1"],
                "Self":{"HostName":"gpu-box","DNSName":"gpu-box.tail1234.ts.net.","TailscaleIPs":null},
                "MagicDNSSuffix":"tail1234.ts.net","Health":null,
                "CurrentTailnet":{"Name":"example.com","MagicDNSSuffix":"tail1234.ts.net","MagicDNSEnabled":true},
                "Peer":null,"User":null}"#,
        )
        .unwrap();
        let report = Report::from_status(&status);
        assert_eq!(report.backend_state, RUNNING);
        assert_eq!(report.tailnet.as_deref(), Some("example.com"));
        assert_eq!(report.dns_name.as_deref(), Some("gpu-box.tail1234.ts.net"));
        assert_eq!(report.ips, ["100.101.102.103", "fd7a:115c:a1e0::1"]);
        assert_eq!(
            report.summary(),
            "tailnet example.com (tail1234.ts.net), gpu-box.tail1234.ts.net, 100.101.102.103 fd7a:115c:a1e0::1"
        );
        // A logged-out backend: no tailnet, no IPs (Go's nil slices are nulls).
        let status: Status = serde_json::from_str(
            r#"{"BackendState":"NeedsLogin","TailscaleIPs":null,"Self":null,"CurrentTailnet":null}"#,
        )
        .unwrap();
        let report = Report::from_status(&status);
        assert_eq!(report, Report::state("NeedsLogin"));
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({"backend_state": "NeedsLogin", "ips": []})
        );
    }
}

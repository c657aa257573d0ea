//! `GET /metrics`: the status report in the OpenMetrics text format (which Prometheus reads),
//! encoded by `prometheus-client`.
//!
//! Nothing is counted here: each scrape renders one [`StatusReport`], asked of the supervisor
//! loop, so the numbers are exactly those `nix2gpu-init status` shows. Series per node (label
//! `node`):
//! - `nix2gpu_node_up`: 1 while a process of the node runs, else 0;
//! - `nix2gpu_node_ready`: 1 when the node is ready, else 0;
//! - `nix2gpu_node_restarts`: restarts since the init started (a gauge: it starts again from 0
//!   with the init);
//! - `nix2gpu_node_last_exit_code`: the exit code of its last process; no series until one
//!   has ended;
//! - `nix2gpu_node_state`: 1, with the current state in label `state` (one series per node).
//!
//! GPU metrics are not here yet: they come with GPU bring-up, from the report's `gpu` part.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::protocol::{NodeReport, StatusReport};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One gauge per node: its name, help text, and value (none: no series for that node).
struct NodeGauge {
    name: &'static str,
    help: &'static str,
    value: fn(&NodeReport) -> Option<i64>,
}

const NODE_GAUGES: &[NodeGauge] = &[
    NodeGauge {
        name: "nix2gpu_node_up",
        help: "1 while a process of the node runs, else 0.",
        value: |node| Some(node.pid.is_some().into()),
    },
    NodeGauge {
        name: "nix2gpu_node_ready",
        help: "1 when the node is ready, else 0.",
        value: |node| Some(node.ready.into()),
    },
    NodeGauge {
        name: "nix2gpu_node_restarts",
        help: "Restarts of the node since the init started.",
        value: |node| Some(node.restarts.into()),
    },
    NodeGauge {
        name: "nix2gpu_node_last_exit_code",
        help: "Exit code of the node's last process (no series until one has ended).",
        value: |node| node.exit_code.map(i64::from),
    },
];

/// The report's nodes, encoded on a scrape.
#[derive(Debug)]
struct Nodes(Vec<NodeReport>);

impl Collector for Nodes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for gauge in NODE_GAUGES {
            let mut family = encoder.encode_descriptor(gauge.name, gauge.help, None, MetricType::Gauge)?;
            for node in &self.0 {
                if let Some(value) = (gauge.value)(node) {
                    let labels = [("node", node.name.as_str())];
                    ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let help = "The node's current state (label `state`); always 1.";
        let mut family = encoder.encode_descriptor("nix2gpu_node_state", help, None, MetricType::Gauge)?;
        for node in &self.0 {
            let labels = [("node", node.name.as_str()), ("state", node.state.as_str())];
            ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The metrics of `report`, as OpenMetrics text (ending with `# EOF`).
pub fn render(report: &StatusReport) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Nodes(report.nodes.clone())));
    let mut text = String::new();
    // Writing to a String cannot fail; an encoder error would only cut the text short.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn node(name: &str, state: &str) -> NodeReport {
        NodeReport {
            name: name.into(),
            state: state.into(),
            pid: None,
            restarts: 0,
            exit_code: None,
            ready: false,
            reason: None,
            status_text: None,
            uptime_seconds: None,
        }
    }

    #[test]
    fn one_series_per_node_and_metric() {
        let report = StatusReport {
            nodes: vec![
                NodeReport { pid: Some(42), ready: true, restarts: 3, ..node("web", "ready") },
                NodeReport { exit_code: Some(0), ..node("migrate", "completed") },
            ],
            platform: None,
            gpu: None,
            tailscale: None,
        };
        let expected = "\
# HELP nix2gpu_node_up 1 while a process of the node runs, else 0.
# TYPE nix2gpu_node_up gauge
nix2gpu_node_up{node=\"web\"} 1
nix2gpu_node_up{node=\"migrate\"} 0
# HELP nix2gpu_node_ready 1 when the node is ready, else 0.
# TYPE nix2gpu_node_ready gauge
nix2gpu_node_ready{node=\"web\"} 1
nix2gpu_node_ready{node=\"migrate\"} 0
# HELP nix2gpu_node_restarts Restarts of the node since the init started.
# TYPE nix2gpu_node_restarts gauge
nix2gpu_node_restarts{node=\"web\"} 3
nix2gpu_node_restarts{node=\"migrate\"} 0
# HELP nix2gpu_node_last_exit_code Exit code of the node's last process (no series until one has ended).
# TYPE nix2gpu_node_last_exit_code gauge
nix2gpu_node_last_exit_code{node=\"migrate\"} 0
# HELP nix2gpu_node_state The node's current state (label `state`); always 1.
# TYPE nix2gpu_node_state gauge
nix2gpu_node_state{node=\"web\",state=\"ready\"} 1
nix2gpu_node_state{node=\"migrate\",state=\"completed\"} 1
# EOF
";
        assert_eq!(render(&report), expected);
    }

    #[test]
    fn label_values_are_escaped() {
        let report = StatusReport {
            nodes: vec![node("a\"b\\c", "running")],
            platform: None,
            gpu: None,
            tailscale: None,
        };
        assert!(render(&report).contains(r#"nix2gpu_node_up{node="a\"b\\c"} 0"#));
    }

    #[test]
    fn no_nodes_still_render() {
        let text = render(&StatusReport { nodes: Vec::new(), platform: None, gpu: None, tailscale: None });
        assert!(text.starts_with("# HELP nix2gpu_node_up ") && text.ends_with("# EOF\n"), "{text}");
    }
}

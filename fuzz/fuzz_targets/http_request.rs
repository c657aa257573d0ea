//! The HTTP endpoint's request handling (`control::http::serve_connection`, hyper's parser and
//! the routes): any bytes a client sends get an HTTP/1.1 answer or a closed connection, never
//! a panic, and never a 500 while the supervisor loop answers (HTTP/1.0 for a 1.0 request). The connection is an in-memory
//! pipe instead of a TCP stream; a stand-in loop answers `Status` and `Health`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nix2gpu_init::control::{Answer, ControlHandle, HealthReport, Request, Response, StatusReport};
use nix2gpu_init::control::{NodeReport, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a tokio runtime")
    })
}

fn report() -> StatusReport {
    let node = NodeReport {
        name: "web".into(),
        state: "ready".into(),
        pid: Some(42),
        restarts: 1,
        exit_code: None,
        ready: true,
        reason: None,
        status_text: Some("serving".into()),
        uptime_seconds: Some(3.5),
    };
    StatusReport { nodes: vec![node], platform: None, gpu: None, tailscale: None }
}

fuzz_target!(|request: &[u8]| {
    runtime().block_on(async {
        let (control, mut asks) = ControlHandle::new();
        let answers = async move {
            while let Some(ask) = asks.recv().await {
                let response = match ask.request {
                    Request::Status => Response::Status(report()),
                    Request::Health => {
                        Response::Health(HealthReport { ready: false, reasons: vec!["web: starting".into()] })
                    }
                    other => panic!("the endpoint asked for {other:?}"),
                };
                let _ = ask.reply.send(Answer::One(response));
            }
        };
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let exchange = async move {
            // The server may close before reading it all (a bad request).
            let _ = client.write_all(request).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            answer
        };
        let ((), answer, ()) = tokio::join!(http::serve_connection(server, control), exchange, answers);
        if answer.is_empty() {
            return;
        }
        let status_line = answer.split(|&byte| byte == b'\r').next().unwrap_or_default();
        let shown = String::from_utf8_lossy(status_line);
        let status: u16 = shown
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| shown.strip_prefix("HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {shown:?}"));
        assert!(matches!(status, 200 | 400..=499 | 503), "{shown}");
    });
});

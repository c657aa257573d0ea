//! The init's own messages: a tracing layer that turns each event into one `init` line handed
//! to the [`Output`](super::Output) (or written straight to stdout before it exists).

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use super::output;
use crate::config::LogLevel;

/// Environment variable that sets the level, overriding the config file.
pub const LEVEL_ENV: &str = "NIX2GPU_LOG";

/// The effective level: `$NIX2GPU_LOG` if it names a level, else the config's, else info.
/// An unreadable `$NIX2GPU_LOG` is returned so the caller can warn about it once logging works.
pub fn effective_level(configured: Option<LogLevel>) -> (LogLevel, Option<String>) {
    match std::env::var(LEVEL_ENV) {
        Ok(value) => match LogLevel::from_name(&value) {
            Some(level) => (level, None),
            None => (configured.unwrap_or(LogLevel::Info), Some(value)),
        },
        Err(_) => (configured.unwrap_or(LogLevel::Info), None),
    }
}

/// Installs the global subscriber for the init's own messages.
pub fn init(level: LogLevel) {
    let filter = match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    };
    // A second installation can only happen in tests that share a process; keeping the first
    // subscriber is correct then, so the error is deliberately ignored.
    let _ = tracing_subscriber::registry().with(InitLayer.with_filter(filter)).try_init();
}

/// Formats events as `[warning: ]message key=value ...`.
struct InitLayer;

impl<S: Subscriber> Layer<S> for InitLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut text = String::new();
        event.record(&mut Message(&mut text));
        output::init_line(*event.metadata().level(), &text);
    }
}

/// Collects an event's fields: the message first, then the others as `key=value`.
struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

/// The label a level gets in text lines.
pub(super) fn label(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error: ",
        Level::WARN => "warning: ",
        Level::DEBUG => "debug: ",
        Level::TRACE => "trace: ",
        Level::INFO => "",
    }
}

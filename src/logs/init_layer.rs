//! The init's own messages: a tracing subscriber that turns each event into one `init` line
//! handed to the [`Output`](super::Output) (or written straight to stdout before it exists).
//!
//! Hand-written on tracing's `Subscriber` rather than tracing-subscriber's registry and a layer:
//! the init opens no spans, and the registry's span storage (a table of 4096 slots, zeroed at
//! start) was a tenth of the init's own start-up work.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber, span};

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
    let _ = tracing::subscriber::set_global_default(InitSubscriber { filter });
}

/// Formats events at or above `filter` as `[warning: ]message key=value ...`.
struct InitSubscriber {
    filter: LevelFilter,
}

impl Subscriber for InitSubscriber {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) { Interest::always() } else { Interest::never() }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter >= *metadata.level()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.filter)
    }

    fn event(&self, event: &Event<'_>) {
        let mut text = String::new();
        event.record(&mut Message(&mut text));
        output::init_line(*event.metadata().level(), &text);
    }

    // The init opens no spans: one id serves any a dependency might open, and nothing is kept.
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
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

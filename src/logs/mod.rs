//! The init's own log lines: `init | message` on stdout, the same framing service output gets
//! (contract: DESIGN.md "Logs"), so `docker logs` reads as one stream.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogLevel;

/// The name the init's own lines carry.
pub const INIT_NAME: &str = "init";
/// Environment variable that sets the level, overriding the config file.
pub const LEVEL_ENV: &str = "NIX2GPU_LOG";

/// Formats one event as a single `init | [warning: ]message key=value` line.
struct InitLine {
    /// Colour only when stdout is a terminal, never into a container log.
    colour: bool,
}

impl<S, N> FormatEvent<S, N> for InitLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "{INIT_NAME} | ")?;
        let (label, colour) = match *event.metadata().level() {
            Level::ERROR => ("error: ", "\x1b[31m"),
            Level::WARN => ("warning: ", "\x1b[33m"),
            Level::DEBUG => ("debug: ", "\x1b[2m"),
            Level::TRACE => ("trace: ", "\x1b[2m"),
            Level::INFO => ("", ""),
        };
        if self.colour && !colour.is_empty() {
            write!(writer, "{colour}{label}\x1b[0m")?;
        } else {
            write!(writer, "{label}")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

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

/// Installs the global subscriber that writes the init's lines to stdout.
pub fn init(level: LogLevel) {
    let max = match level {
        LogLevel::Trace => Level::TRACE,
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warn => Level::WARN,
        LogLevel::Error => Level::ERROR,
    };
    let colour = std::io::stdout().is_terminal();
    // A second installation can only happen in tests that share a process; keeping the first
    // subscriber is correct then, so the error is deliberately ignored.
    let _ = tracing_subscriber::fmt()
        .with_max_level(max)
        // Our formatter colours on its own; tracing's ANSI support is not compiled in.
        .with_ansi(false)
        .event_format(InitLine { colour })
        .with_writer(std::io::stdout)
        .try_init();
}

//! Structured logging, the same in the receiver and the operator.
//!
//! Lines are formatted on the thread that logs and written to stdout by a thread of their
//! own, in batches: a write to stdout costs a system call, and one per line was most of
//! what a JSON line cost a busy receiver (`make bench`, "with JSON logs"). While the process
//! runs no line is dropped: when the writer falls behind by `BUFFERED_LINES`, logging waits
//! for it. At exit, dropping the [`LogGuard`] writes out what is queued, waiting up to a
//! second (tracing-appender's limit); lines logged after that are not written.
//!
//! Timestamps are written by `Timestamp`, not tracing-subscriber's default timer, and JSON
//! lines by `json_line::JsonLine`, not tracing-subscriber's JSON formatter: the same text,
//! for a fraction of the cost (see each).

use std::cell::RefCell;
use std::io::Write;

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
/// For a writer chosen at run time (the benchmark's).
pub use tracing_subscriber::fmt::writer::BoxMakeWriter;

pub use crate::json_line::JsonLine;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Lines queued for the writer before logging waits.
pub const BUFFERED_LINES: usize = 65_536;

/// Keeps the log writer running; dropping it writes out every queued line. Hold it until
/// the process ends.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] Option<WorkerGuard>);

/// A writer that hands lines to a thread which writes them to `out` in batches, flushing
/// whenever it has caught up; never drops a line.
pub fn batched(out: impl Write + Send + 'static) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("hookwarden-log-writer")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, out))
}

/// Installs the global subscriber, writing to stdout. The filter comes from `RUST_LOG`,
/// else `default_filter`.
pub fn init(format: LogFormat, default_filter: &str) -> LogGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (writer, guard) = batched(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(Timestamp)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .event_format(JsonLine::new(Timestamp))
            .try_init(),
    };
    // A subscriber installed before (a test's) keeps its own writer.
    LogGuard(installed.is_ok().then_some(guard))
}

/// The time of a log line in RFC 3339, UTC, with microseconds (`2026-12-02T04:27:13.123456Z`),
/// as tracing-subscriber's default timer writes it. Written here because that timer took
/// 1.4 µs of the 2.5 µs a receiver's JSON line cost (`bench_server stages`, 2026-12-02):
/// this one formats the date and time of day once a second per thread and appends the
/// microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timestamp;

impl FormatTime for Timestamp {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        thread_local! {
            /// (second, that second formatted up to the fraction)
            static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let (secs, micros) = (now.as_secs(), now.subsec_micros());
        SECOND.with_borrow_mut(|(second, text)| {
            if *second != secs {
                *second = secs;
                text.clear();
                let at = i64::try_from(secs)
                    .ok()
                    .and_then(|s| jiff::Timestamp::from_second(s).ok())
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                text.push_str(&at.strftime("%Y-%m-%dT%H:%M:%S").to_string());
            }
            let mut fraction = *b".000000Z";
            let mut rest = micros;
            for digit in fraction[1..7].iter_mut().rev() {
                *digit = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            w.write_str(text)?;
            // ASCII digits, so always UTF-8.
            w.write_str(std::str::from_utf8(&fraction).unwrap_or(".000000Z"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formatted(timer: impl FormatTime) -> String {
        let mut out = String::new();
        timer
            .format_time(&mut Writer::new(&mut out))
            .unwrap_or_default();
        out
    }

    #[test]
    fn timestamps_read_as_the_default_timers_do() {
        // Taken a moment apart, so they may differ past the second; compare their shape and
        // their seconds.
        for _ in 0..3 {
            let ours = formatted(Timestamp);
            let theirs = formatted(tracing_subscriber::fmt::time::SystemTime);
            assert_eq!(ours.len(), theirs.len(), "{ours} {theirs}");
            assert_eq!(ours.len(), "2026-12-02T04:27:13.123456Z".len(), "{ours}");
            assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
            if ours[..19] == theirs[..19] {
                let at: jiff::Timestamp = ours.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                let micros = at.as_microsecond();
                let now = jiff::Timestamp::now().as_microsecond();
                assert!((now - micros).abs() < 1_000_000, "{ours}");
                return;
            }
        }
        panic!("the two timers never agreed on the second");
    }
}

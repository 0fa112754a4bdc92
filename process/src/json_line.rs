//! JSON log lines written straight into the line buffer: the same text as
//! tracing-subscriber's `json().flatten_event(true)` (the same keys in the same order, the
//! same escaping, the same spans), for less than half of its cost.
//!
//! Why not tracing-subscriber's own formatter: it formats the timestamp into a `String` of
//! its own, then writes every key and value through serde_json's `Serializer` over an
//! `io::Write` adaptor that checks each piece for UTF-8 again, and parses each span's
//! fields back from JSON to write them out. A receiver writes one line per delivery, and
//! that line was its largest cost after the HTTP exchange itself (`make bench`, "receiver
//! with JSON logs"; `bench_server stages` times both formatters). `json-subscriber` was
//! measured too and was no faster. The test below holds this formatter to
//! tracing-subscriber's output, byte for byte.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats each event as one JSON object on a line of its own: `timestamp` (from `T`),
/// `level`, the event's fields (`message` among them), `target`, and, inside spans, `span`
/// (the innermost: its fields and `name`) and `spans` (all of them, outermost first).
/// Span fields must have been recorded as JSON (`JsonFields`, as `fmt().json()` sets up).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLine<T> {
    timer: T,
}

impl<T> JsonLine<T> {
    pub fn new(timer: T) -> Self {
        JsonLine { timer }
    }
}

impl<S, N, T> FormatEvent<S, N> for JsonLine<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events from the `log` crate carry their own target and level.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        w.write_str("{\"timestamp\":\"")?;
        // The timer writes digits, letters and punctuation: nothing to escape.
        self.timer.format_time(&mut w)?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_char('"')?;
        let mut fields = Fields {
            out: &mut w,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        string(&mut w, meta.target())?;
        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = current {
            w.write_str(",\"span\":")?;
            span_object::<S, N>(&mut w, &span)?;
            w.write_str(",\"spans\":[")?;
            for (i, outer) in span.scope().from_root().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                span_object::<S, N>(&mut w, &outer)?;
            }
            w.write_char(']')?;
        }
        w.write_str("}\n")
    }
}

/// A span as `{<its fields>,"name":"<its name>"}`: its fields as the fmt layer recorded
/// them (a JSON object, keys in order), without the parse and re-serialisation
/// tracing-subscriber does.
fn span_object<S, N>(
    w: &mut Writer<'_>,
    span: &tracing_subscriber::registry::SpanRef<'_, S>,
) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    w.write_char('{')?;
    let extensions = span.extensions();
    let inner = extensions
        .get::<FormattedFields<N>>()
        .map(|f| f.fields.trim())
        .and_then(|f| f.strip_prefix('{'))
        .and_then(|f| f.strip_suffix('}'))
        .unwrap_or("");
    if !inner.is_empty() {
        w.write_str(inner)?;
        w.write_char(',')?;
    }
    w.write_str("\"name\":")?;
    string(w, span.metadata().name())?;
    w.write_char('}')
}

/// An event's fields as `,"name":value` pairs, in the order they were recorded.
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.out.write_char(',')?;
        string(self.out, field.name())?;
        self.out.write_char(':')
    }

    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(self.out));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json writes it (`1.0`, not Rust's `1`; `null` when not finite).
        self.entry(field, |w| {
            w.write_str(&serde_json::Value::from(value).to_string())
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.entry(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.entry(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| string(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// `s` as a JSON string.
fn string(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given with JSON's string escaping, as serde_json escapes: `"` and `\`,
/// and control characters (`\b \f \n \r \t`, the others as `\u00XX`); everything else,
/// non-ASCII included, as it is.
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            // Cut only before an ASCII byte: always a char boundary.
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.0.write_str("\\u00")?;
                self.0.write_char(HEX[usize::from(b >> 4)] as char)?;
                self.0.write_char(HEX[usize::from(b & 0xf)] as char)?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// A clock that always says the same.
    #[derive(Clone, Copy)]
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-12-06T01:02:03.456789Z")
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// What each formatter writes for the same events.
    fn both(events: impl Fn()) -> (String, String) {
        let theirs = Captured::default();
        let ours = Captured::default();
        let reference = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_timer(Fixed)
            .with_writer(theirs.clone())
            .finish();
        tracing::subscriber::with_default(reference, &events);
        let candidate = tracing_subscriber::fmt()
            .json()
            .event_format(JsonLine::new(Fixed))
            .with_writer(ours.clone())
            .finish();
        tracing::subscriber::with_default(candidate, &events);
        let text = |c: Captured| String::from_utf8(c.0.lock().unwrap().clone()).unwrap();
        (text(theirs), text(ours))
    }

    #[test]
    fn lines_read_as_tracing_subscribers_json_lines() {
        let (theirs, ours) = both(|| {
            let webhook = "team-a/opal";
            tracing::info!(%webhook, events = 3, "delivery recorded");
            tracing::warn!(
                reason = "signature does not match",
                count = 12_u64,
                negative = -4_i64,
                ratio = 0.5_f64,
                whole = 1.0_f64,
                nan = f64::NAN,
                flag = true,
                "delivery refused"
            );
            let tricky =
                "quote \" backslash \\ newline \n tab \t bell \u{7} nul \0 unicode é ✓ \u{7f}";
            tracing::error!(text = tricky, debug = ?tricky, "a {} message: {tricky}", "formatted");
            let outer = tracing::info_span!("reconcile", namespace = "team-a", webhook = "opal");
            let _outer = outer.enter();
            tracing::info!("inside one span");
            let inner = tracing::debug_span!("apply", kind = "Deployment", attempt = 2);
            let _inner = inner.enter();
            tracing::info!(step = "ssa", "inside two spans");
            let empty = tracing::info_span!("empty");
            let _empty = empty.enter();
            tracing::info!("inside a span without fields");
        });
        assert_eq!(theirs.lines().count(), 6, "{theirs}");
        for (t, o) in theirs.lines().zip(ours.lines()) {
            assert_eq!(o, t);
            serde_json::from_str::<serde_json::Value>(o).unwrap();
        }
        assert_eq!(ours, theirs);
    }

    #[test]
    fn every_control_character_is_escaped_as_serde_json_escapes_it() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let (theirs, ours) = both(|| tracing::info!(all = all.as_str(), "x"));
        assert_eq!(ours, theirs);
    }
}

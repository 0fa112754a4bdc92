//! W3C Trace Context (Level 1, <https://www.w3.org/TR/trace-context/>) for the deliveries
//! the receiver passes on. The receiver records no span of its own (it exports no traces):
//! it passes the sender's trace on to the application as it came, so that the application's
//! span is the child of the sender's, and starts one where the sender sent none. The trace
//! id goes on the receiver's log line for the delivery, so one delivery can be followed from
//! the receiver into the application.
//!
//! - A valid `traceparent` is passed on as the sender sent it: its trace id, its parent-id
//!   (the sender's span) and its `sampled` flag, and its `tracestate` unchanged (when it is at
//!   most [`MAX_TRACESTATE`] characters; longer, it is dropped rather than cut). The
//!   `tracestate` is not checked: the spec lets a vendor pass on what it does not read.
//! - Otherwise (none, more than one, or an invalid one) a new trace starts, with a random
//!   trace id, a random parent-id standing for the receiver, and the `sampled` flag set; any
//!   `tracestate` is dropped: the spec forbids reading it without a valid `traceparent`.
//!
//! These headers are not signed: a sender, or anyone on the way, chooses the trace the
//! application's span joins. They are for following a delivery, never for trusting it.
//!
//! The new trace is marked sampled (`01`) because the receiver does record it: its log line
//! carries the trace id, which is what the flag says ("the caller may have recorded trace
//! data"). Marked `00`, it would be dropped by an application whose tracer follows its
//! parent's decision (OpenTelemetry's default sampler), and the user following a delivery
//! would find the receiver's line and no trace behind it. Deliveries are few next to an
//! application's own traffic, so tracing each of them costs little.
//!
//! Flags other than `sampled` are reserved in Level 1, which says to send them as zero; the
//! `traceparent` sent is always version `00`.
//!
//! Hand-written rather than taken from a crate: the maintained implementation is
//! OpenTelemetry's `TraceContextPropagator`, which lives in `opentelemetry_sdk` with the
//! whole SDK behind it; the small crates that parse only the header (`trace-context`,
//! `traceparent`) are single releases from years ago, on older `http` versions or `anyhow`.
//! The rules fit in one function, tested below with the spec's examples and the invalid
//! `traceparent` cases of its test suite.
//!
//! Pure: the random ids are passed in.

use std::fmt;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest `tracestate` passed on: the length the spec asks every vendor to propagate.
pub const MAX_TRACESTATE: usize = 512;

/// The flag that says the caller may have recorded trace data; the only one Level 1 defines.
pub const SAMPLED: u8 = 0x01;

/// How many random bytes [`TraceContext::of`] takes: a new trace's id (16), then its
/// parent-id (8).
pub const RANDOM_BYTES: usize = 24;

/// A trace's id: 16 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

/// A span's id: 8 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanId(pub [u8; 8]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(hex::Buffer::<16>::new().format(&self.0))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(hex::Buffer::<8>::new().format(&self.0))
    }
}

/// A valid `traceparent`, as the sender sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub version: u8,
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: u8,
}

/// Parses one `traceparent` value; `None` when it is not valid, which means: start a new
/// trace.
///
/// Version `00` is exactly `00-<32 hex>-<16 hex>-<2 hex>`, lowercase hex only. A later
/// version is read by these four fields when they are followed by the end or by `-` (the
/// spec's rule for versions this one does not know); `ff` is never valid. Ids of all zeros
/// are not valid. Whitespace around the value (HTTP's optional whitespace) is ignored.
pub fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    let value = value.trim_ascii();
    // version "-" trace-id "-" parent-id "-" flags
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = lower_hex::<1>(&value[..2])?[0];
    let trace_id = lower_hex::<16>(&value[3..35])?;
    let parent_id = lower_hex::<8>(&value[36..52])?;
    let flags = lower_hex::<1>(&value[53..55])?[0];
    let ends_right = match (version, value.get(55)) {
        (0xff, _) => false,
        (_, None) => true,
        // Version 00 has these four fields and nothing after them.
        (0x00, Some(_)) => false,
        (_, Some(next)) => *next == b'-',
    };
    if !ends_right || trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(Parent {
        version,
        trace_id: TraceId(trace_id),
        parent_id: SpanId(parent_id),
        flags,
    })
}

/// `2 * N` lowercase hex digits as `N` bytes.
fn lower_hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(bytes)
}

/// The trace one delivery belongs to, as the receiver passes it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The sender's trace id, or a new one.
    pub trace_id: TraceId,
    /// The `parent-id` of the `traceparent` sent on: the sender's span, or for a new trace
    /// a random id standing for the receiver.
    pub span_id: SpanId,
    /// The flags sent on: the sender's `sampled` flag, or [`SAMPLED`] for a new trace.
    pub flags: u8,
    /// The sender's `tracestate`, passed on unchanged.
    pub tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// The trace of a delivery that came with `headers`: the sender's, passed on, when it
    /// sent one valid `traceparent`; else a new one. `random` is fresh random bytes: the
    /// first 16 are a new trace's id, the last 8 its parent-id.
    pub fn of(headers: &HeaderMap, random: [u8; RANDOM_BYTES]) -> TraceContext {
        let mut new_trace = [0u8; 16];
        new_trace.copy_from_slice(&random[..16]);
        let mut span = [0u8; 8];
        span.copy_from_slice(&random[16..]);
        let span_id = SpanId(not_zero(span));
        match sender_traceparent(headers) {
            Some(parent) => TraceContext {
                trace_id: parent.trace_id,
                span_id: parent.parent_id,
                flags: parent.flags & SAMPLED,
                tracestate: tracestate(headers),
            },
            None => TraceContext {
                trace_id: TraceId(not_zero(new_trace)),
                span_id,
                flags: SAMPLED,
                tracestate: None,
            },
        }
    }

    /// The `traceparent` the application gets: `00-<trace-id>-<span-id>-<flags>`.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

/// The sender's `traceparent`, when it sent exactly one and that one is valid: two are as
/// good as none, since they may name different traces.
fn sender_traceparent(headers: &HeaderMap) -> Option<Parent> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    match (values.next(), values.next()) {
        (Some(one), None) => parse_traceparent(one.as_bytes()),
        _ => None,
    }
}

/// The sender's `tracestate`: its fields joined in order (the spec lets a sender split it
/// over several), empty ones left out; `None` when there is none, or when it is longer
/// than [`MAX_TRACESTATE`].
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut fields = headers
        .get_all(&TRACESTATE)
        .iter()
        .filter(|v| !v.as_bytes().trim_ascii().is_empty());
    let first = fields.next()?;
    let Some(second) = fields.next() else {
        // One field, the common case: passed on as it is, without a copy.
        return (first.len() <= MAX_TRACESTATE).then(|| first.clone());
    };
    let mut joined = first.as_bytes().to_vec();
    for field in std::iter::once(second).chain(fields) {
        joined.push(b',');
        joined.extend_from_slice(field.as_bytes());
        if joined.len() > MAX_TRACESTATE {
            return None;
        }
    }
    // Each part was a header value, and so is a comma: this does not fail.
    HeaderValue::from_bytes(&joined).ok()
}

/// `id`, unless it is all zeros (which the spec forbids): then 1. Random ids are all zeros
/// once in 2^64 draws at the least.
fn not_zero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id == [0; N] {
        id[N - 1] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";
    const RANDOM: [u8; RANDOM_BYTES] = [
        0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
        0xb0, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58,
    ];
    const NEW_TRACE: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0";
    const SPAN: &str = "5152535455565758";

    fn parsed(value: &str) -> Option<(String, String, u8)> {
        parse_traceparent(value.as_bytes())
            .map(|p| (p.trace_id.to_string(), p.parent_id.to_string(), p.flags))
    }

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_specs_examples_parse() {
        let sampled = format!("00-{TRACE}-{PARENT}-01");
        assert_eq!(parsed(&sampled), Some((TRACE.into(), PARENT.into(), 0x01)));
        let not_sampled = format!("00-{TRACE}-{PARENT}-00");
        assert_eq!(
            parsed(&not_sampled),
            Some((TRACE.into(), PARENT.into(), 0x00))
        );
        // HTTP's optional whitespace around a value
        assert!(parsed(&format!(" \t{sampled}\t ")).is_some());
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let id = "12345678901234567890123456789012";
        let p = parse_traceparent(format!("cc-{id}-1234567890123456-01").as_bytes()).unwrap();
        assert_eq!((p.version, p.trace_id.to_string()), (0xcc, id.to_string()));
        let longer = format!("cc-{id}-1234567890123456-01-what-the-future-will-be-like");
        assert_eq!(parsed(&longer).map(|p| p.0), Some(id.to_string()));
        // but only when the flags are followed by the end or a dash
        let unknown = format!("cc-{id}-1234567890123456-01.what-the-future-will-be-like");
        assert_eq!(parsed(&unknown), None);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        let id = "12345678901234567890123456789012";
        let span = "1234567890123456";
        for invalid in [
            // version 00 has nothing after its flags
            format!("00-{id}-{span}-01."),
            format!("00-{id}-{span}-01-what-the-future-will-be-like"),
            // version ff is forbidden; versions are two lowercase hex digits
            format!("ff-{id}-{span}-01"),
            format!(".0-{id}-{span}-01"),
            format!("0.-{id}-{span}-01"),
            format!("0A-{id}-{span}-01"),
            format!("000-{id}-{span}-01"),
            format!("0-{id}-{span}-01"),
            // ids: lowercase hex, their exact length, not all zeros
            format!("00-00000000000000000000000000000000-{span}-01"),
            format!("00-{id}-0000000000000000-01"),
            format!("00-.2345678901234567890123456789012-{span}-01"),
            format!("00-1234567890123456789012345678901.-{span}-01"),
            format!("00-{}-{span}-01", TRACE.to_uppercase()),
            format!("00-{id}-{}-01", PARENT.to_uppercase()),
            format!("00-{id}3-{span}-01"),
            format!("00-{}-{span}-01", &id[1..]),
            format!("00-{id}-{span}7-01"),
            format!("00-{id}-{}-01", &span[1..]),
            format!("00-{id}-.234567890123456-01"),
            // flags: two lowercase hex digits
            format!("00-{id}-{span}-.0"),
            format!("00-{id}-{span}-0."),
            format!("00-{id}-{span}-0A"),
            format!("00-{id}-{span}-001"),
            format!("00-{id}-{span}-1"),
            // other separators, nothing at all
            format!("00_{id}_{span}_01"),
            String::new(),
        ] {
            assert_eq!(parsed(&invalid), None, "{invalid:?}");
        }
    }

    #[test]
    fn a_valid_traceparent_is_passed_on_as_the_sender_sent_it() {
        let h = headers(&[
            (&TRACEPARENT, &format!("00-{TRACE}-{PARENT}-00")),
            (&TRACESTATE, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ]);
        let t = TraceContext::of(&h, RANDOM);
        assert_eq!(t.traceparent(), format!("00-{TRACE}-{PARENT}-00"));
        assert_eq!(t.trace_id.to_string(), TRACE);
        assert_eq!(
            t.tracestate.unwrap(),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        );
    }

    #[test]
    fn only_the_sampled_flag_is_passed_on_and_a_later_version_goes_on_as_00() {
        let h = headers(&[(&TRACEPARENT, &format!("cc-{TRACE}-{PARENT}-ff-more"))]);
        assert_eq!(
            TraceContext::of(&h, RANDOM).traceparent(),
            format!("00-{TRACE}-{PARENT}-01")
        );
        let h = headers(&[(&TRACEPARENT, &format!("00-{TRACE}-{PARENT}-02"))]);
        assert_eq!(TraceContext::of(&h, RANDOM).flags, 0x00);
    }

    #[test]
    fn without_a_valid_traceparent_a_sampled_trace_starts_and_tracestate_is_dropped() {
        let cases = [
            headers(&[]),
            headers(&[(&TRACESTATE, "congo=t61rcWkgMzE")]),
            headers(&[
                (
                    &TRACEPARENT,
                    &format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
                ),
                (&TRACESTATE, "congo=t61rcWkgMzE"),
            ]),
            // two traceparents: which one?
            headers(&[
                (&TRACEPARENT, &format!("00-{TRACE}-{PARENT}-01")),
                (&TRACEPARENT, &format!("00-{TRACE}-{PARENT}-01")),
            ]),
        ];
        for h in cases {
            let t = TraceContext::of(&h, RANDOM);
            assert_eq!(
                t.traceparent(),
                format!("00-{NEW_TRACE}-{SPAN}-01"),
                "{h:?}"
            );
            assert_eq!(t.tracestate, None, "{h:?}");
        }
    }

    #[test]
    fn tracestate_fields_are_joined_and_one_too_long_is_dropped() {
        let parent = format!("00-{TRACE}-{PARENT}-01");
        let h = headers(&[
            (&TRACEPARENT, &parent),
            (&TRACESTATE, "foo=1,bar=2"),
            (&TRACESTATE, ""),
            (&TRACESTATE, "baz=3"),
        ]);
        assert_eq!(
            TraceContext::of(&h, RANDOM).tracestate.unwrap(),
            "foo=1,bar=2,baz=3"
        );
        let h = headers(&[(&TRACEPARENT, &parent), (&TRACESTATE, " ")]);
        assert_eq!(TraceContext::of(&h, RANDOM).tracestate, None);

        let longest = format!("a={}", "x".repeat(MAX_TRACESTATE - 2));
        let h = headers(&[(&TRACEPARENT, &parent), (&TRACESTATE, &longest)]);
        assert_eq!(TraceContext::of(&h, RANDOM).tracestate.unwrap(), &longest);
        let h = headers(&[
            (&TRACEPARENT, &parent),
            (&TRACESTATE, &format!("{longest}y")),
        ]);
        assert_eq!(TraceContext::of(&h, RANDOM).tracestate, None);
        let half = format!("a={}", "x".repeat(MAX_TRACESTATE / 2));
        let h = headers(&[
            (&TRACEPARENT, &parent),
            (&TRACESTATE, &half),
            (&TRACESTATE, &half),
        ]);
        assert_eq!(TraceContext::of(&h, RANDOM).tracestate, None);
    }

    #[test]
    fn random_ids_of_all_zeros_are_not_used() {
        let t = TraceContext::of(&HeaderMap::new(), [0; RANDOM_BYTES]);
        assert_eq!(
            t.traceparent(),
            "00-00000000000000000000000000000001-0000000000000001-01"
        );
        assert!(parse_traceparent(t.traceparent().as_bytes()).is_some());
    }
}

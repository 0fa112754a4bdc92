//! Which sources a Webhook accepts deliveries from (`limits.sourceRanges`), and which
//! address a delivery comes from. Pure: the connection's peer address and the request's
//! headers go in, a verdict comes out.
//!
//! The source is the connection's peer ([`crate::connection::PeerAddr`]), unless that peer
//! is one of the Webhook's `limits.trustedProxies`: then it is the right-most address of
//! `X-Forwarded-For` that is not itself a trusted proxy (what each trusted proxy appended;
//! anything to its left a sender may have written). A request without a peer address, a
//! trusted proxy that names no untrusted address, or an entry that is not an address
//! before one is found: the source is unknown, and a Webhook with source ranges refuses it.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;

use crate::config::{Limits, parse_cidr};

/// `X-Forwarded-For`, as proxies append to it.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A Webhook's source ranges and trusted proxies, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// `None`: any source, known or not.
    ranges: Option<Vec<IpNet>>,
    trusted: Vec<IpNet>,
}

impl Sources {
    /// The ranges of `limits`. A range that does not parse (the configuration's check
    /// refuses it first) matches nothing: never more sources than configured.
    pub fn of(limits: &Limits) -> Self {
        let parse = |ranges: &[String]| -> Vec<IpNet> {
            ranges.iter().filter_map(|r| parse_cidr(r)).collect()
        };
        Sources {
            ranges: (!limits.source_ranges.is_empty()).then(|| parse(&limits.source_ranges)),
            trusted: parse(&limits.trusted_proxies),
        }
    }

    /// Whether a delivery from `peer` (the connection's, if known) with `headers` is
    /// accepted.
    pub fn admit(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
        let Some(ranges) = &self.ranges else {
            return true;
        };
        self.source(peer, headers)
            .is_some_and(|source| ranges.iter().any(|r| r.contains(&source)))
    }

    /// Where a delivery from `peer` with `headers` comes from; `None`: unknown.
    pub fn source(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.trusts(peer) {
            return Some(peer);
        }
        // Every X-Forwarded-For field, in order, as one list; read from the right.
        let mut fields = Vec::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            fields.extend(value.to_str().ok()?.split(','));
        }
        for entry in fields.into_iter().rev() {
            let address = entry.trim().parse::<IpAddr>().ok()?.to_canonical();
            if !self.trusts(address) {
                return Some(address);
            }
        }
        None
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.trusted.iter().any(|p| p.contains(&address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn sources(ranges: &[&str], trusted: &[&str]) -> Sources {
        Sources::of(&Limits {
            source_ranges: ranges.iter().map(|r| r.to_string()).collect(),
            trusted_proxies: trusted.iter().map(|r| r.to_string()).collect(),
            ..Limits::default()
        })
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn without_ranges_any_source_is_admitted_even_an_unknown_one() {
        let any = sources(&[], &[]);
        assert!(any.admit(None, &HeaderMap::new()));
        assert!(any.admit(ip("203.0.113.9"), &forwarded(&["garbage"])));
    }

    #[test]
    fn the_peer_is_the_source_unless_it_is_a_trusted_proxy() {
        let s = sources(&["192.30.252.0/22", "2001:db8::/32"], &[]);
        let none = HeaderMap::new();
        assert!(s.admit(ip("192.30.252.10"), &none));
        assert!(s.admit(ip("2001:db8::5"), &none));
        // An IPv4 peer seen on a dual-stack socket is the IPv4 address.
        assert!(s.admit(ip("::ffff:192.30.252.10"), &none));
        assert!(!s.admit(ip("192.30.248.1"), &none));
        // A sender's own X-Forwarded-For changes nothing without trusted proxies.
        assert!(!s.admit(ip("203.0.113.9"), &forwarded(&["192.30.252.10"])));
        // No peer address (a request not from a connection): unknown, refused.
        assert!(!s.admit(None, &none));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_forwarded_address_is_the_source() {
        let s = sources(&["192.30.252.0/22"], &["10.0.0.0/8", "fd00::/8"]);
        let proxy = ip("10.1.2.3");
        assert_eq!(
            s.source(proxy, &forwarded(&["192.30.252.10"])),
            ip("192.30.252.10")
        );
        // Two trusted proxies in a row; what the sender wrote on the left is ignored.
        let chain = forwarded(&["192.30.252.10, 203.0.113.9", "10.9.9.9"]);
        assert_eq!(s.source(proxy, &chain), ip("203.0.113.9"));
        assert!(!s.admit(proxy, &chain));
        let chain = forwarded(&["203.0.113.9, 192.30.252.10 , 10.9.9.9"]);
        assert_eq!(s.source(proxy, &chain), ip("192.30.252.10"));
        assert!(s.admit(proxy, &chain));
        // A trusted proxy that forwards nothing, only trusted addresses, or an entry that
        // is not an address before an untrusted one: unknown.
        for unknown in [
            forwarded(&[]),
            forwarded(&["10.0.0.1, fd00::1"]),
            forwarded(&["192.30.252.10, unknown"]),
            forwarded(&["192.30.252.10:443"]),
        ] {
            assert_eq!(s.source(proxy, &unknown), None, "{unknown:?}");
            assert!(!s.admit(proxy, &unknown));
        }
        // An entry that is not an address left of the source does not matter.
        assert_eq!(
            s.source(proxy, &forwarded(&["unknown, 192.30.252.10"])),
            ip("192.30.252.10")
        );
        // A peer outside the trusted proxies is the source, whatever it forwards.
        assert_eq!(
            s.source(ip("203.0.113.9"), &forwarded(&["192.30.252.10"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_range_that_does_not_parse_admits_nothing() {
        let s = sources(&["not a range"], &[]);
        assert!(!s.admit(ip("192.30.252.10"), &HeaderMap::new()));
    }
}

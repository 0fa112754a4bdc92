//! Who holds a writer Lease, whether their term still runs, and where the holder is. Pure:
//! what the replicas write into the Lease, and how they read it and their Service's
//! EndpointSlices back.
//!
//! A replica's identity in the Lease is `<pod>/<token>`: the pod, which the replicas find
//! among the ready endpoints of their own Service (never an address the Lease names: anyone
//! who may patch Leases in the namespace could name one); the token, a random value of this
//! process that a handoff carries, so that a sender cannot make a request look like one.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;

/// A replica as its Lease identity names it.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub pod: String,
    pub token: String,
}

impl Identity {
    /// This process, in pod `pod`, with a fresh random token.
    pub fn new(pod: &str) -> Result<Identity, getrandom::Error> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random)?;
        Ok(Identity {
            pod: pod.into(),
            token: hex::encode(random),
        })
    }

    /// The identity `text` names, if it is one a replica wrote.
    pub fn parse(text: &str) -> Option<Identity> {
        let (pod, token) = text.split_once('/')?;
        if pod.is_empty() || token.is_empty() || token.contains('/') {
            return None;
        }
        Some(Identity {
            pod: pod.into(),
            token: token.into(),
        })
    }

    /// As written into the Lease.
    pub fn lease_identity(&self) -> String {
        format!("{}/{}", self.pod, self.token)
    }
}

/// Never the token: it is what makes a request a handoff.
impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("pod", &self.pod)
            .finish_non_exhaustive()
    }
}

/// A holder and when its term ends unless renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub holder: Identity,
    pub until: Timestamp,
}

impl Term {
    /// The term a Lease records: none when nobody holds it, or when the holder is not a
    /// replica (an identity of another form) or never renewed it.
    pub fn of(spec: &LeaseSpec) -> Option<Term> {
        let holder = Identity::parse(spec.holder_identity.as_deref()?)?;
        let renewed = spec.renew_time.as_ref()?.0;
        let seconds = u64::try_from(spec.lease_duration_seconds?).ok()?;
        let until = renewed.checked_add(Duration::from_secs(seconds)).ok()?;
        Some(Term { holder, until })
    }

    /// Whether the holder still holds it at `now`.
    pub fn runs_at(&self, now: Timestamp) -> bool {
        now < self.until
    }
}

/// The ready pods behind a Service, by name, with their addresses: from its EndpointSlices.
/// An endpoint whose readiness is unknown counts as ready, as the API documents.
pub fn ready_pods<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<String, IpAddr> {
    slices
        .into_iter()
        .filter(|s| s.address_type == "IPv4" || s.address_type == "IPv6")
        .flat_map(|s| &s.endpoints)
        .filter(|e| {
            let c = e.conditions.as_ref();
            c.and_then(|c| c.ready) != Some(false) && c.and_then(|c| c.terminating) != Some(true)
        })
        .filter_map(|e| {
            let pod = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))?;
            Some((pod.name.clone()?, e.addresses.first()?.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn spec(holder: &str, renewed: &str, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn an_identity_reads_back_as_written_and_never_shows_its_token() {
        let me = Identity::new("pool-abc").unwrap();
        assert_eq!(me.token.len(), 32);
        assert_eq!(Identity::parse(&me.lease_identity()), Some(me.clone()));
        assert!(!format!("{me:?}").contains(&me.token));
        let again = Identity::new("pool-abc").unwrap();
        assert_ne!(me.token, again.token, "each process has its own token");
    }

    #[test]
    fn identities_of_another_form_name_no_replica() {
        for text in [
            "",
            "pool-abc",
            "pool-abc_1234",
            "/t",
            "pool-abc/",
            "pool-abc/t/more",
        ] {
            assert_eq!(Identity::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_term_runs_until_its_renewal_plus_its_duration() {
        let term = Term::of(&spec("pool-abc/t0", "2026-12-06T10:00:00.5Z", 15)).unwrap();
        assert_eq!(term.holder.pod, "pool-abc");
        assert!(term.runs_at("2026-12-06T10:00:15.4Z".parse().unwrap()));
        assert!(!term.runs_at("2026-12-06T10:00:15.5Z".parse().unwrap()));
    }

    #[test]
    fn a_lease_nobody_holds_has_no_term() {
        let released = LeaseSpec {
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert_eq!(Term::of(&released), None);
        let never_renewed = LeaseSpec {
            renew_time: None,
            ..spec("pool-abc/t0", "2026-12-06T10:00:00Z", 15)
        };
        assert_eq!(Term::of(&never_renewed), None);
        assert_eq!(
            Term::of(&spec("someone-else", "2026-12-06T10:00:00Z", 15)),
            None
        );
        assert_eq!(
            Term::of(&spec("pool-abc/t0", "2026-12-06T10:00:00Z", -1)),
            None
        );
    }

    fn endpoint(pod: &str, ip: &str, ready: Option<bool>, terminating: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready,
                terminating,
                ..EndpointConditions::default()
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }
    }

    #[test]
    fn only_ready_pods_of_the_service_are_found() {
        let slice = |kind: &str, endpoints| EndpointSlice {
            address_type: kind.into(),
            endpoints,
            ..EndpointSlice::default()
        };
        let mut not_a_pod = endpoint("node", "10.0.0.9", Some(true), None);
        not_a_pod.target_ref.as_mut().unwrap().kind = Some("Node".into());
        let slices = [
            slice(
                "IPv4",
                vec![
                    endpoint("a", "10.0.0.1", Some(true), None),
                    endpoint("b", "10.0.0.2", None, None),
                    endpoint("starting", "10.0.0.3", Some(false), None),
                    endpoint("stopping", "10.0.0.4", Some(true), Some(true)),
                    not_a_pod,
                ],
            ),
            slice("IPv6", vec![endpoint("c", "fd00::3", Some(true), None)]),
            slice("FQDN", vec![endpoint("d", "example.com", Some(true), None)]),
        ];
        let found = ready_pods(&slices);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            [
                ("a".to_string(), "10.0.0.1".parse().unwrap()),
                ("b".to_string(), "10.0.0.2".parse().unwrap()),
                ("c".to_string(), "fd00::3".parse().unwrap()),
            ]
        );
    }
}

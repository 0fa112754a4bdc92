//! Who holds a writer Lease, whether their term still runs, and where the holder is. Pure:
//! what the replicas write into the Lease, and how they read it and their Service's
//! EndpointSlices back.
//!
//! A replica's identity in the Lease is `<pod>/<token>`: the pod, which the replicas find
//! among the ready endpoints of their own Service (never an address the Lease names: anyone
//! who may patch Leases in the namespace could name one); the token, a random value of this
//! process that a handoff carries, so that a sender cannot make a request look like one.
//!
//! Nor is every EndpointSlice that names the Service believed: anyone who may create
//! EndpointSlices in the namespace can label one with the Service's name. Only slices the
//! EndpointSlice controller manages count ([`MANAGED_BY`]), only endpoints that are Pods,
//! and a pod found with more than one address is no pod to hand to: a forged slice that
//! names the holder with another address makes the holder unknown (the replica then records
//! deliveries itself), never sends them elsewhere.

use std::collections::{BTreeMap, BTreeSet};
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

/// The label of the Service an EndpointSlice is for.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label that says who manages an EndpointSlice, and the value that says Kubernetes'
/// EndpointSlice controller does: the only slices believed.
pub const MANAGED_BY: (&str, &str) = (
    "endpointslice.kubernetes.io/managed-by",
    "endpointslice-controller.k8s.io",
);

/// The label selector of the EndpointSlices [`ready_pods`] believes for `service`.
pub fn slice_selector(service: &str) -> String {
    format!("{SERVICE_NAME}={service},{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

/// The ready pods behind Service `service`, by name, with their addresses: from its
/// EndpointSlices that the EndpointSlice controller manages, whatever else `slices` holds.
/// An endpoint whose readiness is unknown counts as ready, as the API documents. A pod
/// that these slices name with more than one address of a family (counting every
/// endpoint, ready or not) is left out: one of them is not the pod's.
pub fn ready_pods<'a>(
    service: &str,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<String, IpAddr> {
    let mut addresses: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut ready: BTreeSet<&str> = BTreeSet::new();
    let believed = slices.into_iter().filter(|s| {
        let label = |key| s.metadata.labels.as_ref().and_then(|l| l.get(key));
        label(SERVICE_NAME).map(String::as_str) == Some(service)
            && label(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
            && (s.address_type == "IPv4" || s.address_type == "IPv6")
    });
    for endpoint in believed.flat_map(|s| &s.endpoints) {
        let Some(pod) = endpoint
            .target_ref
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .and_then(|r| r.name.as_deref())
        else {
            continue;
        };
        let found = addresses.entry(pod).or_default();
        for address in &endpoint.addresses {
            match address.parse() {
                Ok(ip) => found.insert(ip),
                // Not an address: of no use, and not the pod's one address either.
                Err(_) => found.insert(IpAddr::from([0, 0, 0, 0])),
            };
        }
        let c = endpoint.conditions.as_ref();
        if c.and_then(|c| c.ready) != Some(false) && c.and_then(|c| c.terminating) != Some(true) {
            ready.insert(pod);
        }
    }
    addresses
        .into_iter()
        .filter(|(pod, _)| ready.contains(pod))
        .filter_map(|(pod, found)| {
            // One address per family (a dual-stack Service has a slice per family); the
            // IPv4 one where there are both.
            let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = found.into_iter().partition(IpAddr::is_ipv4);
            match (v4.as_slice(), v6.as_slice()) {
                ([one], []) | ([one], [_]) | ([], [one]) => Some((pod.to_string(), *one)),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

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

    fn slice(kind: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                labels: Some(BTreeMap::from([
                    (SERVICE_NAME.to_string(), "pool".to_string()),
                    (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                ])),
                ..ObjectMeta::default()
            },
            address_type: kind.into(),
            endpoints,
            ..EndpointSlice::default()
        }
    }

    fn found(slices: &[EndpointSlice]) -> Vec<(String, IpAddr)> {
        ready_pods("pool", slices).into_iter().collect()
    }

    #[test]
    fn only_ready_pods_of_the_service_are_found() {
        let mut not_a_pod = endpoint("node", "10.0.0.9", Some(true), None);
        not_a_pod.target_ref.as_mut().unwrap().kind = Some("Node".into());
        let mut no_target = endpoint("x", "10.0.0.8", Some(true), None);
        no_target.target_ref = None;
        let slices = [
            slice(
                "IPv4",
                vec![
                    endpoint("a", "10.0.0.1", Some(true), None),
                    endpoint("b", "10.0.0.2", None, None),
                    endpoint("starting", "10.0.0.3", Some(false), None),
                    endpoint("stopping", "10.0.0.4", Some(true), Some(true)),
                    not_a_pod,
                    no_target,
                ],
            ),
            slice("IPv6", vec![endpoint("c", "fd00::3", Some(true), None)]),
            slice("FQDN", vec![endpoint("d", "example.com", Some(true), None)]),
        ];
        assert_eq!(
            found(&slices),
            [
                ("a".to_string(), "10.0.0.1".parse().unwrap()),
                ("b".to_string(), "10.0.0.2".parse().unwrap()),
                ("c".to_string(), "fd00::3".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn a_slice_not_managed_by_the_endpointslice_controller_is_not_believed() {
        let real = slice(
            "IPv4",
            vec![endpoint("writer", "10.0.0.1", Some(true), None)],
        );
        let forged_only = |edit: &dyn Fn(&mut BTreeMap<String, String>)| {
            let mut forged = slice(
                "IPv4",
                vec![endpoint("other", "10.6.6.6", Some(true), None)],
            );
            edit(forged.metadata.labels.as_mut().unwrap());
            found(&[real.clone(), forged])
        };
        let writer = ("writer".to_string(), "10.0.0.1".parse().unwrap());
        for forged in [
            forged_only(&|l| {
                l.remove(MANAGED_BY.0);
            }),
            forged_only(&|l| {
                l.insert(MANAGED_BY.0.into(), "someone-else".into());
            }),
            forged_only(&|l| {
                l.insert(SERVICE_NAME.into(), "another-service".into());
            }),
        ] {
            assert_eq!(forged, std::slice::from_ref(&writer));
        }
        let mut unlabelled = real.clone();
        unlabelled.metadata.labels = None;
        assert!(found(&[unlabelled]).is_empty());
        assert_eq!(
            slice_selector("pool"),
            "kubernetes.io/service-name=pool,endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io"
        );
    }

    #[test]
    fn a_pod_named_with_two_addresses_is_no_pod_to_hand_to() {
        let real = slice(
            "IPv4",
            vec![
                endpoint("writer", "10.0.0.1", Some(true), None),
                endpoint("other", "10.0.0.2", Some(true), None),
            ],
        );
        // A forged slice with every label right, naming the writer elsewhere: the writer
        // is unknown, the other pod untouched; whether the forged endpoint claims to be
        // ready or not.
        for ready in [Some(true), Some(false)] {
            let forged = slice("IPv4", vec![endpoint("writer", "10.6.6.6", ready, None)]);
            assert_eq!(
                found(&[real.clone(), forged]),
                [("other".to_string(), "10.0.0.2".parse().unwrap())],
                "{ready:?}"
            );
        }
        // Two addresses in one endpoint, or one that is not an address: as much unknown.
        let mut two = endpoint("writer", "10.0.0.1", Some(true), None);
        two.addresses.push("10.6.6.6".into());
        assert!(found(&[slice("IPv4", vec![two])]).is_empty());
        let mut odd = endpoint("writer", "10.0.0.1", Some(true), None);
        odd.addresses.push("not-an-address".into());
        assert!(found(&[slice("IPv4", vec![odd])]).is_empty());
        // The same endpoint in two slices (the controller moving it): the same address,
        // still known.
        let again = slice(
            "IPv4",
            vec![endpoint("writer", "10.0.0.1", Some(true), None)],
        );
        assert_eq!(
            found(&[real.clone(), again]),
            [
                ("other".to_string(), "10.0.0.2".parse().unwrap()),
                ("writer".to_string(), "10.0.0.1".parse().unwrap()),
            ]
        );
        // Dual stack: a slice per family, one address each; the IPv4 one is used. A
        // second IPv6 address for the writer makes it unknown again.
        let v6 = slice(
            "IPv6",
            vec![endpoint("writer", "fd00::1", Some(true), None)],
        );
        assert_eq!(
            found(&[real.clone(), v6.clone()]),
            [
                ("other".to_string(), "10.0.0.2".parse().unwrap()),
                ("writer".to_string(), "10.0.0.1".parse().unwrap()),
            ]
        );
        let forged6 = slice(
            "IPv6",
            vec![endpoint("writer", "fd00::666", Some(true), None)],
        );
        assert_eq!(
            found(&[real, v6, forged6]),
            [("other".to_string(), "10.0.0.2".parse().unwrap())]
        );
    }
}

//! Who holds a writer Lease, and whether their term still runs. Pure: what the replicas
//! write into the Lease and how they read it back.
//!
//! A replica's identity in the Lease is `<pod>/<address>/<token>`: the pod, for people;
//! the address, where the other replicas hand it deliveries; the token, a random value of
//! this process that a handoff carries, so that only a replica (which can read the Lease)
//! makes a request a handoff, never a sender.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::jiff::Timestamp;

/// A replica as its Lease identity names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub pod: String,
    pub addr: SocketAddr,
    pub token: String,
}

impl Identity {
    /// This process: `pod` serving deliveries on `addr`, with a fresh random token.
    pub fn new(pod: &str, addr: SocketAddr) -> Result<Identity, getrandom::Error> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random)?;
        Ok(Identity {
            pod: pod.into(),
            addr,
            token: hex::encode(random),
        })
    }

    /// The identity `text` names, if it is one a replica wrote.
    pub fn parse(text: &str) -> Option<Identity> {
        let mut parts = text.split('/');
        let (pod, addr, token) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || pod.is_empty() || token.is_empty() {
            return None;
        }
        Some(Identity {
            pod: pod.into(),
            addr: addr.parse().ok()?,
            token: token.into(),
        })
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.pod, self.addr, self.token)
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

#[cfg(test)]
mod tests {
    use super::*;
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
    fn an_identity_reads_back_as_written() {
        for addr in ["10.244.0.7:8080", "[fd00::7]:8080"] {
            let me = Identity::new("pool-abc", addr.parse().unwrap()).unwrap();
            assert_eq!(me.token.len(), 32);
            assert_eq!(Identity::parse(&me.to_string()), Some(me));
        }
        let other = Identity::new("pool-abc", "10.0.0.1:1".parse().unwrap()).unwrap();
        let again = Identity::new("pool-abc", "10.0.0.1:1".parse().unwrap()).unwrap();
        assert_ne!(other.token, again.token, "each process has its own token");
    }

    #[test]
    fn identities_of_another_form_name_no_replica() {
        for text in [
            "",
            "pool-abc",
            "pool-abc_1234",
            "pool-abc/10.0.0.1:8080",
            "pool-abc/not-an-address/t",
            "/10.0.0.1:8080/t",
            "pool-abc/10.0.0.1:8080/",
            "pool-abc/10.0.0.1:8080/t/more",
        ] {
            assert_eq!(Identity::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_term_runs_until_its_renewal_plus_its_duration() {
        let term = Term::of(&spec(
            "pool-abc/10.0.0.1:8080/t0",
            "2026-12-06T10:00:00.5Z",
            15,
        ))
        .unwrap();
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
            ..spec("pool-abc/10.0.0.1:8080/t0", "2026-12-06T10:00:00Z", 15)
        };
        assert_eq!(Term::of(&never_renewed), None);
        assert_eq!(
            Term::of(&spec("someone-else", "2026-12-06T10:00:00Z", 15)),
            None
        );
        assert_eq!(
            Term::of(&spec(
                "pool-abc/10.0.0.1:8080/t0",
                "2026-12-06T10:00:00Z",
                -1
            )),
            None
        );
    }
}

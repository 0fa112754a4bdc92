//! The admission webhook's TLS: a CA and a serving certificate that the operator generates
//! itself (no cert-manager needed), kept in a Secret that every replica reads, and rotated
//! when a third of their lifetime is left. The CA bundle the API server trusts holds the
//! new CA and the one before it, so that a replica still presenting the old certificate
//! stays trusted until it has reloaded. Pure: certificates in, certificates out.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Keys of the Secret, as a `kubernetes.io/tls` Secret names them.
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
pub const CA_KEY: &str = "ca.crt";
/// The annotation on the Secret with the serving certificate's expiry (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "hookwarden.io/not-after";

/// What the webhook serves with and what the API server trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    /// The serving certificate (PEM).
    pub cert: String,
    /// Its private key (PEM). Never logged: `Debug` leaves it out.
    pub key: String,
    /// The CA bundle (PEM): the current CA first, then the previous one while it is valid.
    pub ca_bundle: String,
    pub not_after: Timestamp,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The names the API server calls the webhook's Service by.
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_string(),
    ]
}

fn offset(t: Timestamp) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|e| e.to_string())
}

/// A new CA and a serving certificate for `names`, valid from an hour ago (clock skew) for
/// `validity`; `previous` is the Material being replaced, whose CA stays in the bundle
/// while it has not expired.
pub fn generate(
    names: &[String],
    validity: Duration,
    now: Timestamp,
    previous: Option<&Material>,
) -> Result<Material, String> {
    let span = jiff::SignedDuration::try_from(validity).map_err(|e| e.to_string())?;
    let not_before = now
        .checked_sub(jiff::SignedDuration::from_hours(1))
        .map_err(|e| e.to_string())?;
    let not_after = now.checked_add(span).map_err(|e| e.to_string())?;
    let e = |e: rcgen::Error| e.to_string();

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.distinguished_name
        .push(DnType::CommonName, "hookwarden admission CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = offset(not_before)?;
    ca.not_after = offset(not_after)?;
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(names.to_vec()).map_err(e)?;
    if let Some(first) = names.first() {
        leaf.distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = offset(not_before)?;
    leaf.not_after = offset(not_after)?;
    let leaf_key = KeyPair::generate().map_err(e)?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(e)?;

    let mut ca_bundle = ca_cert.pem();
    if let Some(old) = previous.filter(|p| p.not_after > now) {
        ca_bundle.push_str(first_pem(&old.ca_bundle));
    }
    Ok(Material {
        cert: leaf_cert.pem(),
        key: leaf_key.serialize_pem(),
        ca_bundle,
        not_after,
    })
}

/// The current CA of a bundle: its first certificate.
pub fn current_ca(bundle: &str) -> &str {
    first_pem(bundle)
}

/// The first PEM block of `bundle` (the current CA of an earlier bundle).
fn first_pem(bundle: &str) -> &str {
    const END: &str = "-----END CERTIFICATE-----";
    match bundle.find(END) {
        Some(i) => {
            let end = i + END.len();
            let end = if bundle[end..].starts_with('\n') {
                end + 1
            } else {
                end
            };
            &bundle[..end]
        }
        None => "",
    }
}

/// Whether the serving certificate and key parse, and belong together (a Secret edited by
/// hand, or cut short, must be replaced rather than stop the webhook).
pub fn check(m: &Material) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(m.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(m.key.as_bytes())
        .map_err(|e| format!("the key does not parse: {e}"))?;
    rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map(|_| ())
        .map_err(|e| format!("the key does not fit the certificate: {e}"))
}

/// The certificates of a PEM bundle, each with its PEM armour.
pub fn pem_blocks(bundle: &str) -> Vec<&str> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = bundle;
    while let Some(i) = rest.find(END) {
        let mut end = i + END.len();
        if rest[end..].starts_with('\n') {
            end += 1;
        }
        let block = &rest[..end];
        if let Some(start) = block.find("-----BEGIN CERTIFICATE-----") {
            out.push(&block[start..]);
        }
        rest = &rest[end..];
    }
    out
}

/// The bundle to give the API server: `ours` (the current CA first, then the previous one)
/// and, after them, the CAs of `there` (what the configuration holds now: another
/// replica's) that `ours` lacks, at most `MAX_CAS` in all. So a write never drops the CA a
/// replica that has not reloaded yet still serves with.
pub fn merged_bundle(ours: &str, there: Option<&str>) -> String {
    let mut blocks: Vec<&str> = pem_blocks(ours);
    for b in there.map(pem_blocks).unwrap_or_default() {
        if !blocks.contains(&b) {
            blocks.push(b);
        }
    }
    blocks.truncate(MAX_CAS);
    blocks
        .iter()
        .map(|b| {
            if b.ends_with('\n') {
                b.to_string()
            } else {
                format!("{b}\n")
            }
        })
        .collect()
}

/// The most CAs a bundle carries: the current one, the previous one, and one a replica
/// may still serve with after the Secret was replaced by hand.
pub const MAX_CAS: usize = 3;

/// Whether `material` must be replaced at `now`: when less than a third of `validity` is
/// left (or it has expired).
pub fn due(material: &Material, validity: Duration, now: Timestamp) -> bool {
    let third = jiff::SignedDuration::try_from(validity / 3).unwrap_or(jiff::SignedDuration::ZERO);
    match material.not_after.checked_sub(third) {
        Ok(renew_at) => now >= renew_at,
        Err(_) => true,
    }
}

/// The Secret's data and annotations for `m`.
pub fn to_secret(m: &Material) -> (BTreeMap<String, ByteString>, BTreeMap<String, String>) {
    let data = BTreeMap::from([
        (
            CERT_KEY.to_string(),
            ByteString(m.cert.clone().into_bytes()),
        ),
        (KEY_KEY.to_string(), ByteString(m.key.clone().into_bytes())),
        (
            CA_KEY.to_string(),
            ByteString(m.ca_bundle.clone().into_bytes()),
        ),
    ]);
    let annotations = BTreeMap::from([(NOT_AFTER_ANNOTATION.to_string(), m.not_after.to_string())]);
    (data, annotations)
}

/// The Material in a Secret written by [`to_secret`]; None when anything is missing.
pub fn from_secret(
    data: Option<&BTreeMap<String, ByteString>>,
    annotations: Option<&BTreeMap<String, String>>,
) -> Option<Material> {
    let data = data?;
    let text = |k: &str| {
        String::from_utf8(data.get(k)?.0.clone())
            .ok()
            .filter(|s| !s.is_empty())
    };
    Some(Material {
        cert: text(CERT_KEY)?,
        key: text(KEY_KEY)?,
        ca_bundle: text(CA_KEY)?,
        not_after: annotations?.get(NOT_AFTER_ANNOTATION)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn a_generated_certificate_names_the_service_and_round_trips_through_the_secret() {
        let names = dns_names("hookwarden-operator-webhook", "hookwarden-system");
        assert_eq!(
            names[0],
            "hookwarden-operator-webhook.hookwarden-system.svc"
        );
        let now = t(1_800_000_000);
        let m = generate(&names, 365 * DAY, now, None).unwrap();
        assert!(m.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(m.key.contains("PRIVATE KEY"));
        assert_eq!(m.ca_bundle.matches("BEGIN CERTIFICATE").count(), 1);
        assert_eq!(m.not_after, t(1_800_000_000 + 365 * 86_400));
        assert_ne!(m.cert, m.ca_bundle, "the serving certificate is not the CA");
        let (data, annotations) = to_secret(&m);
        assert_eq!(
            from_secret(Some(&data), Some(&annotations)),
            Some(m.clone())
        );
        assert_eq!(from_secret(Some(&data), None), None);
        assert!(
            !format!("{m:?}").contains("PRIVATE"),
            "Debug leaves the key out"
        );
    }

    #[test]
    fn rotation_keeps_the_previous_ca_trusted_while_it_is_valid() {
        let names = dns_names("s", "ns");
        let start = t(1_800_000_000);
        let first = generate(&names, 90 * DAY, start, None).unwrap();
        assert!(!due(&first, 90 * DAY, start));
        assert!(!due(&first, 90 * DAY, t(1_800_000_000 + 59 * 86_400)));
        assert!(due(&first, 90 * DAY, t(1_800_000_000 + 61 * 86_400)));
        let later = t(1_800_000_000 + 61 * 86_400);
        let second = generate(&names, 90 * DAY, later, Some(&first)).unwrap();
        assert_eq!(second.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(second.ca_bundle.ends_with(&first.ca_bundle));
        // Only the previous CA is carried, not every one before it.
        let third = generate(
            &names,
            90 * DAY,
            t(1_800_000_000 + 100 * 86_400),
            Some(&second),
        )
        .unwrap();
        assert_eq!(third.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(!third.ca_bundle.contains(&first.ca_bundle));
        // An expired one is dropped.
        let after = t(1_800_000_000 + 400 * 86_400);
        let fresh = generate(&names, 90 * DAY, after, Some(&third)).unwrap();
        assert_eq!(fresh.ca_bundle.matches("BEGIN CERTIFICATE").count(), 1);
    }

    #[test]
    fn a_broken_pair_is_found_and_bundles_merge_without_dropping_a_served_ca() {
        let names = dns_names("s", "ns");
        let a = generate(&names, 90 * DAY, t(1_800_000_000), None).unwrap();
        let b = generate(&names, 90 * DAY, t(1_800_000_000), None).unwrap();
        assert_eq!(check(&a), Ok(()));
        let crossed = Material {
            key: b.key.clone(),
            ..a.clone()
        };
        assert!(check(&crossed).unwrap_err().contains("does not fit"));
        let cut = Material {
            cert: a.cert[..40].to_string(),
            ..a.clone()
        };
        assert!(check(&cut).is_err());

        // The Secret was replaced by hand (no previous CA): the configuration's CA stays.
        let merged = merged_bundle(&b.ca_bundle, Some(&a.ca_bundle));
        assert_eq!(
            pem_blocks(&merged),
            [current_ca(&b.ca_bundle), current_ca(&a.ca_bundle)]
        );
        // Nothing twice, ours first, at most MAX_CAS.
        assert_eq!(merged_bundle(&merged, Some(&merged)), merged);
        let c = generate(&names, 90 * DAY, t(1_800_000_000), Some(&b)).unwrap();
        let d = generate(&names, 90 * DAY, t(1_800_000_000), Some(&c)).unwrap();
        let all = merged_bundle(&d.ca_bundle, Some(&merged));
        assert_eq!(pem_blocks(&all).len(), MAX_CAS);
        assert_eq!(pem_blocks(&all)[0], current_ca(&d.ca_bundle));
        assert_eq!(merged_bundle(&a.ca_bundle, None), a.ca_bundle);
    }
}

//! Payloads, parsed only after their signature verified: the typed events of each sender.
//! Pure. A parse error names the problem, never the payload's contents.

use axum::http::HeaderMap;
use std::borrow::Cow;

use serde::Deserialize;

use crate::config::Provider;

/// One event of a delivery (an Opal delivery may carry several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEvent {
    /// The sender's event type, e.g. `USER_ADDED_TO_RESOURCE`, `org-created`, `push`
    /// (borrowed for the senders whose types hookwarden knows).
    pub event_type: Cow<'static, str>,
    /// What happened, typed where hookwarden knows the sender.
    pub detail: Detail,
}

/// What an event says, for the senders hookwarden understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    Opal(OpalEvent),
    Membrane(MembraneEvent),
    /// Another sender: only the event type is understood.
    Other,
}

/// Opal's envelope (docs.opal.dev, webhooks).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct OpalEnvelope<'a> {
    pub event_ts: i64,
    /// Required, but not kept: borrowed from the body, so it costs no copy.
    #[serde(borrow)]
    pub organization_id: Cow<'a, str>,
    pub events: Vec<OpalEvent>,
}

/// Opal's six access-change events.
///
/// Read through the flat [`RawOpalEvent`] rather than serde's internally tagged enums,
/// which buffer every event into an intermediate tree first: a third of the parse cost.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawOpalEvent")]
pub enum OpalEvent {
    UserAddedToResource {
        resource_type: String,
        user_id: String,
        resource_id: String,
        access_level: String,
    },
    UserRemovedFromResource {
        resource_type: String,
        user_id: String,
        resource_id: String,
        access_level: String,
    },
    UserAddedToGroup {
        group_type: String,
        user_id: String,
        group_id: String,
    },
    UserRemovedFromGroup {
        group_type: String,
        user_id: String,
        group_id: String,
    },
    ResourceAddedToGroup {
        group_type: String,
        resource_type: String,
        group_id: String,
        resource_id: String,
    },
    ResourceRemovedFromGroup {
        group_type: String,
        resource_type: String,
        group_id: String,
        resource_id: String,
    },
}

/// The `event_type` of an Opal event.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum OpalEventType {
    UserAddedToResource,
    UserRemovedFromResource,
    UserAddedToGroup,
    UserRemovedFromGroup,
    ResourceAddedToGroup,
    ResourceRemovedFromGroup,
}

/// Every field any Opal event has; which ones are required depends on `event_type`.
#[derive(Deserialize)]
struct RawOpalEvent {
    event_type: OpalEventType,
    resource_type: Option<String>,
    user_id: Option<String>,
    resource_id: Option<String>,
    access_level: Option<String>,
    group_type: Option<String>,
    group_id: Option<String>,
}

impl TryFrom<RawOpalEvent> for OpalEvent {
    type Error = String;

    fn try_from(raw: RawOpalEvent) -> Result<Self, String> {
        use OpalEventType as T;
        let RawOpalEvent {
            event_type,
            resource_type,
            user_id,
            resource_id,
            access_level,
            group_type,
            group_id,
        } = raw;
        // The message names the missing field, never a value.
        let need = |field: Option<String>, name: &str| {
            field.ok_or_else(|| format!("missing field `{name}`"))
        };
        Ok(match event_type {
            T::UserAddedToResource => OpalEvent::UserAddedToResource {
                resource_type: need(resource_type, "resource_type")?,
                user_id: need(user_id, "user_id")?,
                resource_id: need(resource_id, "resource_id")?,
                access_level: need(access_level, "access_level")?,
            },
            T::UserRemovedFromResource => OpalEvent::UserRemovedFromResource {
                resource_type: need(resource_type, "resource_type")?,
                user_id: need(user_id, "user_id")?,
                resource_id: need(resource_id, "resource_id")?,
                access_level: need(access_level, "access_level")?,
            },
            T::UserAddedToGroup => OpalEvent::UserAddedToGroup {
                group_type: need(group_type, "group_type")?,
                user_id: need(user_id, "user_id")?,
                group_id: need(group_id, "group_id")?,
            },
            T::UserRemovedFromGroup => OpalEvent::UserRemovedFromGroup {
                group_type: need(group_type, "group_type")?,
                user_id: need(user_id, "user_id")?,
                group_id: need(group_id, "group_id")?,
            },
            T::ResourceAddedToGroup => OpalEvent::ResourceAddedToGroup {
                group_type: need(group_type, "group_type")?,
                resource_type: need(resource_type, "resource_type")?,
                group_id: need(group_id, "group_id")?,
                resource_id: need(resource_id, "resource_id")?,
            },
            T::ResourceRemovedFromGroup => OpalEvent::ResourceRemovedFromGroup {
                group_type: need(group_type, "group_type")?,
                resource_type: need(resource_type, "resource_type")?,
                group_id: need(group_id, "group_id")?,
                resource_id: need(resource_id, "resource_id")?,
            },
        })
    }
}

impl OpalEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            OpalEvent::UserAddedToResource { .. } => "USER_ADDED_TO_RESOURCE",
            OpalEvent::UserRemovedFromResource { .. } => "USER_REMOVED_FROM_RESOURCE",
            OpalEvent::UserAddedToGroup { .. } => "USER_ADDED_TO_GROUP",
            OpalEvent::UserRemovedFromGroup { .. } => "USER_REMOVED_FROM_GROUP",
            OpalEvent::ResourceAddedToGroup { .. } => "RESOURCE_ADDED_TO_GROUP",
            OpalEvent::ResourceRemovedFromGroup { .. } => "RESOURCE_REMOVED_FROM_GROUP",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Person {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub email: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Org {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub trial_end_date: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct OrgAdmin {
    pub email: String,
    #[serde(default)]
    pub orgs: Vec<OrgRef>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct OrgRef {
    pub id: String,
    pub name: String,
}

/// Membrane's three system webhooks.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum MembraneEvent {
    #[serde(rename_all = "camelCase")]
    UserInvitedToOrg {
        invitation_url: String,
        issuer: Person,
        user: Person,
        org: Org,
    },
    #[serde(rename_all = "camelCase")]
    OrgAccessRequested {
        user: Person,
        #[serde(default)]
        org_admins: Vec<OrgAdmin>,
    },
    #[serde(rename_all = "camelCase")]
    OrgCreated {
        name: String,
        #[serde(default)]
        workspace_name: Option<String>,
        org_id: String,
        org: Org,
        user: Person,
    },
}

impl MembraneEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            MembraneEvent::UserInvitedToOrg { .. } => "user-invited-to-org",
            MembraneEvent::OrgAccessRequested { .. } => "org-access-requested",
            MembraneEvent::OrgCreated { .. } => "org-created",
        }
    }
}

/// Why a verified payload could not be understood. Carries serde's position and
/// expectation, never the payload's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn json_error(e: serde_json::Error) -> ParseError {
    // serde_json's messages quote unknown variant names and types, not values; keep the
    // category and position only, to be sure.
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable body",
        serde_json::error::Category::Syntax => "body is not valid JSON",
        serde_json::error::Category::Eof => "body ends too early",
        serde_json::error::Category::Data => "body does not have the sender's payload shape",
    };
    ParseError(format!("{what} (line {}, column {})", e.line(), e.column()))
}

/// Reads a JSON body. JSON is UTF-8 (RFC 8259): checked once for the whole body, which
/// spares serde_json checking every string again (a tenth of the parse).
fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ParseError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ParseError("body is not valid JSON (not UTF-8)".into()))?;
    serde_json::from_str(text).map_err(json_error)
}

/// The events in a verified delivery.
pub fn parse(provider: Provider, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, ParseError> {
    match provider {
        Provider::Opal => {
            let env: OpalEnvelope = from_json(body)?;
            if env.events.is_empty() {
                return Err(ParseError("Opal delivery carries no events".into()));
            }
            Ok(Parsed {
                event_ts: Some(env.event_ts),
                events: env
                    .events
                    .into_iter()
                    .map(|e| ReceivedEvent {
                        event_type: e.event_type().into(),
                        detail: Detail::Opal(e),
                    })
                    .collect(),
            })
        }
        Provider::Membrane => {
            let e: MembraneEvent = from_json(body)?;
            Ok(Parsed {
                event_ts: None,
                events: vec![ReceivedEvent {
                    event_type: e.event_type().into(),
                    detail: Detail::Membrane(e),
                }],
            })
        }
        other => {
            let event_type = other_event_type(other, headers, body)?;
            Ok(Parsed {
                event_ts: None,
                events: vec![ReceivedEvent {
                    event_type: event_type.into(),
                    detail: Detail::Other,
                }],
            })
        }
    }
}

/// A parsed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The sender's event time, where it has one (Opal's `event_ts`).
    pub event_ts: Option<i64>,
    pub events: Vec<ReceivedEvent>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

#[derive(Deserialize)]
struct Typed {
    #[serde(rename = "type")]
    type_: Option<String>,
}

fn other_event_type(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, ParseError> {
    let from_header = |name: &str| {
        header(headers, name)
            .map(String::from)
            .ok_or_else(|| ParseError(format!("missing header {name}")))
    };
    let from_body = || -> Result<String, ParseError> {
        let t: Typed = from_json(body)?;
        t.type_
            .ok_or_else(|| ParseError("body has no \"type\"".into()))
    };
    match provider {
        Provider::Github => from_header("x-github-event"),
        Provider::Gitlab => from_header("x-gitlab-event"),
        Provider::Shopify => from_header("x-shopify-topic"),
        Provider::Stripe | Provider::StandardWebhooks => from_body(),
        // Slack sends JSON events (`type`) or form-encoded commands and interactions.
        Provider::Slack => {
            if let Ok(t) = from_body() {
                return Ok(t);
            }
            let form =
                std::str::from_utf8(body).map_err(|_| ParseError("body is not UTF-8".into()))?;
            if form.split('&').any(|kv| kv.starts_with("command=")) {
                Ok("slash_command".into())
            } else if form.split('&').any(|kv| kv.starts_with("payload=")) {
                Ok("interaction".into())
            } else {
                Err(ParseError(
                    "neither a JSON event nor a form-encoded command".into(),
                ))
            }
        }
        // A generic sender: its `type` if it has one in a JSON body, else "delivery".
        Provider::GenericHmac => Ok(from_body().unwrap_or_else(|_| "delivery".into())),
        // (parsed whole by their own parsers before this is reached; no panic on a request)
        Provider::Opal | Provider::Membrane => from_body(),
    }
}

/// A PascalCase Event reason for an event type: `USER_ADDED_TO_RESOURCE` ->
/// `UserAddedToResource`, `org-created` -> `OrgCreated`, `issues.opened` -> `IssuesOpened`.
pub fn reason(event_type: &str) -> String {
    let mut out = String::new();
    for word in event_type
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars.map(|c| c.to_ascii_lowercase()));
        }
    }
    if out.is_empty() {
        out.push_str("Delivery");
    }
    out.truncate(128);
    out
}

/// A one-line note a person can read.
pub fn note(event: &ReceivedEvent) -> String {
    let text = match &event.detail {
        Detail::Opal(e) => match e {
            OpalEvent::UserAddedToResource {
                user_id,
                resource_id,
                access_level,
                ..
            } => {
                format!("{user_id} added to resource {resource_id} as {access_level}")
            }
            OpalEvent::UserRemovedFromResource {
                user_id,
                resource_id,
                access_level,
                ..
            } => {
                format!("{user_id} removed from resource {resource_id} ({access_level})")
            }
            OpalEvent::UserAddedToGroup {
                user_id, group_id, ..
            } => {
                format!("{user_id} added to group {group_id}")
            }
            OpalEvent::UserRemovedFromGroup {
                user_id, group_id, ..
            } => {
                format!("{user_id} removed from group {group_id}")
            }
            OpalEvent::ResourceAddedToGroup {
                resource_id,
                group_id,
                ..
            } => {
                format!("resource {resource_id} added to group {group_id}")
            }
            OpalEvent::ResourceRemovedFromGroup {
                resource_id,
                group_id,
                ..
            } => {
                format!("resource {resource_id} removed from group {group_id}")
            }
        },
        Detail::Membrane(e) => match e {
            MembraneEvent::UserInvitedToOrg {
                user, org, issuer, ..
            } => {
                format!(
                    "{} invited to organization {} ({}) by {}",
                    user.email, org.name, org.id, issuer.email
                )
            }
            MembraneEvent::OrgAccessRequested { user, .. } => {
                format!("{} requested access to an organization", user.email)
            }
            MembraneEvent::OrgCreated { org, user, .. } => {
                format!(
                    "organization {} ({}) created by {}",
                    org.name, org.id, user.email
                )
            }
        },
        Detail::Other => format!("{} received", event.event_type),
    };
    // Event notes are at most 1 kB.
    hookwarden_api::text::prefix_within(&text, 1000).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const OPAL: &str = r#"{"event_ts":1643355931,"organization_id":"eec5dcd9-fb0a-4726-b283-4379b524a772","events":[{"event_type":"USER_ADDED_TO_RESOURCE","resource_type":"CUSTOM","user_id":"user@example.com","resource_id":"0eb35db24007c8148","access_level":"admin"},{"event_type":"RESOURCE_REMOVED_FROM_GROUP","group_type":"CONNECTOR_GROUP","resource_type":"CUSTOM","group_id":"00g1838z8y1VJcoTG5d7","resource_id":"0eb35db24007c8148"}]}"#;

    #[test]
    fn opal_envelope_with_several_events() {
        let p = parse(Provider::Opal, &HeaderMap::new(), OPAL.as_bytes()).unwrap();
        assert_eq!(p.event_ts, Some(1643355931));
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.events[0].event_type, "USER_ADDED_TO_RESOURCE");
        assert_eq!(
            note(&p.events[0]),
            "user@example.com added to resource 0eb35db24007c8148 as admin"
        );
        assert_eq!(reason(&p.events[1].event_type), "ResourceRemovedFromGroup");
    }

    #[test]
    fn every_opal_event_type_needs_its_own_fields() {
        let envelope =
            |event: &str| format!(r#"{{"event_ts":1,"organization_id":"o","events":[{event}]}}"#);
        let cases = [
            (
                "USER_ADDED_TO_RESOURCE",
                &["resource_type", "user_id", "resource_id", "access_level"][..],
            ),
            (
                "USER_REMOVED_FROM_RESOURCE",
                &["resource_type", "user_id", "resource_id", "access_level"],
            ),
            (
                "USER_ADDED_TO_GROUP",
                &["group_type", "user_id", "group_id"],
            ),
            (
                "USER_REMOVED_FROM_GROUP",
                &["group_type", "user_id", "group_id"],
            ),
            (
                "RESOURCE_ADDED_TO_GROUP",
                &["group_type", "resource_type", "group_id", "resource_id"],
            ),
            (
                "RESOURCE_REMOVED_FROM_GROUP",
                &["group_type", "resource_type", "group_id", "resource_id"],
            ),
        ];
        for (event_type, fields) in cases {
            let event = |skip: Option<&str>| {
                let mut parts = vec![format!(r#""event_type":"{event_type}""#)];
                for f in fields.iter().filter(|f| Some(**f) != skip) {
                    parts.push(format!(r#""{f}":"value-of-{f}""#));
                }
                // Fields of other event types are ignored.
                parts.push(r#""extra":"ignored""#.into());
                format!("{{{}}}", parts.join(","))
            };
            let p = parse(
                Provider::Opal,
                &HeaderMap::new(),
                envelope(&event(None)).as_bytes(),
            )
            .unwrap();
            assert_eq!(p.events[0].event_type, event_type);
            let Detail::Opal(e) = &p.events[0].detail else {
                panic!("not an Opal event")
            };
            assert_eq!(e.event_type(), event_type);
            let text = note(&p.events[0]);
            for f in fields
                .iter()
                .filter(|f| ["user_id", "resource_id", "group_id"].contains(f))
            {
                assert!(text.contains(&format!("value-of-{f}")), "{text}");
            }
            for missing in fields {
                let err = parse(
                    Provider::Opal,
                    &HeaderMap::new(),
                    envelope(&event(Some(missing))).as_bytes(),
                )
                .unwrap_err();
                assert!(
                    err.0
                        .starts_with("body does not have the sender's payload shape"),
                    "{event_type} without {missing}: {err}"
                );
                assert!(!err.0.contains("value-of"), "{err}");
            }
        }
        let unknown = envelope(r#"{"event_type":"USER_DELETED","user_id":"u"}"#);
        assert!(parse(Provider::Opal, &HeaderMap::new(), unknown.as_bytes()).is_err());
        let null = envelope(
            r#"{"event_type":"USER_ADDED_TO_GROUP","group_type":"G","user_id":null,"group_id":"g"}"#,
        );
        assert!(parse(Provider::Opal, &HeaderMap::new(), null.as_bytes()).is_err());
    }

    #[test]
    fn membrane_payloads_from_the_docs() {
        let created = r#"{"type":"org-created","name":"New Organization","workspaceName":"Main Workspace","orgId":"org456","org":{"id":"org456","name":"New Organization","domains":["company.com"],"trialEndDate":"2025-05-23"},"user":{"name":"Creator User","email":"creator@company.com"}}"#;
        let p = parse(Provider::Membrane, &HeaderMap::new(), created.as_bytes()).unwrap();
        assert_eq!(p.events[0].event_type, "org-created");
        assert_eq!(
            note(&p.events[0]),
            "organization New Organization (org456) created by creator@company.com"
        );
        assert_eq!(reason("org-created"), "OrgCreated");
        let requested = r#"{"type":"org-access-requested","user":{"id":"user123","email":"employee@company.com","name":"Jane Employee"},"orgAdmins":[{"email":"admin@company.com","orgs":[{"id":"org123","name":"My Organization"}]}]}"#;
        let p = parse(Provider::Membrane, &HeaderMap::new(), requested.as_bytes()).unwrap();
        assert!(
            matches!(&p.events[0].detail, Detail::Membrane(MembraneEvent::OrgAccessRequested { org_admins, .. }) if org_admins.len() == 1)
        );
    }

    #[test]
    fn parse_errors_do_not_echo_values() {
        let secretish = r#"{"type":"org-deleted","token":"hunter2"}"#;
        let err = parse(Provider::Membrane, &HeaderMap::new(), secretish.as_bytes()).unwrap_err();
        assert!(!err.0.contains("hunter2"), "{err}");
        assert!(!err.0.contains("org-deleted"), "{err}");
        let err = parse(Provider::Opal, &HeaderMap::new(), b"{not json").unwrap_err();
        assert!(err.0.starts_with("body is not valid JSON"), "{err}");
        let err = parse(
            Provider::Opal,
            &HeaderMap::new(),
            br#"{"event_ts":1,"organization_id":"o","events":[]}"#,
        )
        .unwrap_err();
        assert!(err.0.contains("no events"));
    }

    #[test]
    fn other_senders_event_types() {
        let mut h = HeaderMap::new();
        h.insert("x-github-event", HeaderValue::from_static("push"));
        assert_eq!(
            parse(Provider::Github, &h, b"{}").unwrap().events[0].event_type,
            "push"
        );
        assert!(parse(Provider::Github, &HeaderMap::new(), b"{}").is_err());
        let stripe = br#"{"id":"evt_1","type":"invoice.paid"}"#;
        assert_eq!(
            parse(Provider::Stripe, &h, stripe).unwrap().events[0].event_type,
            "invoice.paid"
        );
        assert_eq!(reason("invoice.paid"), "InvoicePaid");
        let slack = b"token=x&command=%2Fdeploy&text=";
        assert_eq!(
            parse(Provider::Slack, &h, slack).unwrap().events[0].event_type,
            "slash_command"
        );
        assert_eq!(
            parse(Provider::GenericHmac, &h, b"raw").unwrap().events[0].event_type,
            "delivery"
        );
    }
}

//! What a delivery does to a sink ConfigMap's data: pure, so that the rules (idempotence,
//! order, bounds, size) are tested without an API server. `sink::configmap` reads the ConfigMap,
//! calls [`apply`] and writes the result back under optimistic concurrency.
//!
//! Layout (every value is JSON; user ids such as emails live in values, never in keys):
//! - `state` mode, Opal, key `opal.json`:
//!   `{"resourceAccess": [{resourceId, resourceType, userId, accessLevel, eventTs}],
//!     "groupMembers": [{groupId, groupType, userId, eventTs}],
//!     "groupResources": [{groupId, groupType, resourceId, resourceType, eventTs}],
//!     "removed": [...]}`: added on `*_ADDED_*`, removed on `*_REMOVED_*`; `removed` keeps the
//!   newest removals so that a late, older "added" cannot bring back what was removed after it.
//! - `state` mode, Membrane, key `membrane.json`:
//!   `{"organizations": [{orgId, name, workspaceName, domains, createdBy}],
//!     "invitations": [{orgId, orgName, email, invitedBy}],
//!     "accessRequests": [{userId, email, name, orgIds}]}`.
//! - `latest` mode: key `<event type>.json` (characters other than `-._a-zA-Z0-9` become
//!   `_`) holding the last payload of that type, verbatim.
//! - `log` mode: key `log.json`, the last [`LOG_ENTRIES`] deliveries, newest last:
//!   `[{receivedAt, eventTypes, payload}]`.
//! - Every mode, key `hookwarden.json`: the identities of the last [`REMEMBERED`] deliveries
//!   applied (so a retry or replay applies once) and, in `latest` mode, each type's event time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ConfigMapMode;
use crate::delivery::Delivery;
use crate::payload::{Detail, MembraneEvent, OpalEvent};

/// Deliveries remembered as applied.
pub const REMEMBERED: usize = 1000;
/// Removals remembered to keep order in Opal's state.
pub const TOMBSTONES: usize = 1000;
/// Deliveries kept in `log` mode.
pub const LOG_ENTRIES: usize = 100;
/// A ConfigMap holds at most 1 MiB; past this the delivery is refused, never truncated.
pub const MAX_BYTES: usize = hookwarden_api::names::SINK_MAX_BYTES;

pub const BOOKKEEPING_KEY: &str = "hookwarden.json";

/// Why a delivery cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("ConfigMap would hold {0} bytes, over the {MAX_BYTES} this sink allows; not recorded")]
    TooLarge(usize),
    #[error("ConfigMap key {0} does not hold what this receiver wrote; fix or clear it")]
    Corrupt(String),
}

/// Applies `delivery` to `data`. Returns whether anything changed: `false` when the delivery
/// was applied before (a retry, a replay, another replica). On an error `data` is as it was.
pub fn apply(
    mode: ConfigMapMode,
    data: &mut BTreeMap<String, String>,
    delivery: &Delivery,
    received_at: i64,
) -> Result<bool, ViewError> {
    let (applied, writes) = batch(mode, data, &[delivery], received_at)?;
    commit(data, writes)?;
    Ok(applied[0])
}

/// Applies `deliveries` in order, with what each gets. In `state` mode the documents are read
/// and written once for them all (the cost of a write is reading and writing the whole
/// document); when that fails (they would not fit together, a document this receiver did
/// not write) they are applied one by one, so that only those that cannot be recorded are
/// refused. One difference from one by one: a delivery that would not fit alone is accepted
/// when a later one of the same batch makes room again (an Opal removal), since the state
/// written holds both. `latest` and `log` go one by one: there a later delivery replaces or
/// trims an earlier one, so a batch could accept one that does not fit.
pub fn apply_all(
    mode: ConfigMapMode,
    data: &mut BTreeMap<String, String>,
    deliveries: &[&Delivery],
    received_at: i64,
) -> Vec<Result<bool, ViewError>> {
    if matches!(mode, ConfigMapMode::State)
        && let Ok(applied) = batch(mode, data, deliveries, received_at)
            .and_then(|(applied, writes)| commit(data, writes).map(|()| applied))
    {
        return applied.into_iter().map(Ok).collect();
    }
    deliveries
        .iter()
        .map(|d| apply(mode, data, d, received_at))
        .collect()
}

/// The documents of one batch, read once, changed by each delivery, written once.
#[derive(Default)]
struct Docs {
    book: Bookkeeping,
    opal: Option<OpalState>,
    membrane: Option<MembraneState>,
    log: Option<Vec<LogEntry>>,
    /// `latest` mode: the keys written.
    latest: BTreeMap<String, String>,
}

/// Whether each delivery changes anything, and the keys to write for them all.
fn batch(
    mode: ConfigMapMode,
    data: &BTreeMap<String, String>,
    deliveries: &[&Delivery],
    received_at: i64,
) -> Result<(Vec<bool>, BTreeMap<String, String>), ViewError> {
    let mut docs = Docs {
        book: read(data, BOOKKEEPING_KEY)?.unwrap_or_default(),
        ..Docs::default()
    };
    let mut applied = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let id = hex::encode(&delivery.key[..16]);
        if docs.book.applied.contains(&id) {
            applied.push(false);
            continue;
        }
        match mode {
            ConfigMapMode::State => apply_state(&mut docs, data, delivery)?,
            ConfigMapMode::Latest => apply_latest(&mut docs, delivery),
            ConfigMapMode::Log => apply_log(&mut docs, data, delivery, received_at)?,
        }
        docs.book.applied.push(id);
        trim_front(&mut docs.book.applied, REMEMBERED);
        applied.push(true);
    }
    let mut writes = std::mem::take(&mut docs.latest);
    if applied.contains(&true) {
        if let Some(mut s) = docs.opal {
            s.sort();
            write(&mut writes, "opal.json", &s);
        }
        if let Some(s) = docs.membrane {
            write(&mut writes, "membrane.json", &s);
        }
        if let Some(log) = docs.log {
            write(&mut writes, "log.json", &log);
        }
        write(&mut writes, BOOKKEEPING_KEY, &docs.book);
    }
    Ok((applied, writes))
}

/// Writes `writes` into `data` if the result fits.
fn commit(
    data: &mut BTreeMap<String, String>,
    writes: BTreeMap<String, String>,
) -> Result<(), ViewError> {
    if writes.is_empty() {
        return Ok(());
    }
    let size: usize = data
        .iter()
        .filter(|(k, _)| !writes.contains_key(*k))
        .chain(writes.iter())
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if size > MAX_BYTES {
        return Err(ViewError::TooLarge(size));
    }
    data.extend(writes);
    Ok(())
}

#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase")]
struct Bookkeeping {
    #[serde(default)]
    applied: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    latest_ts: BTreeMap<String, i64>,
}

fn read<T: for<'de> Deserialize<'de>>(
    data: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<T>, ViewError> {
    data.get(key)
        .map(|text| serde_json::from_str(text).map_err(|_| ViewError::Corrupt(key.into())))
        .transpose()
}

fn write<T: Serialize>(data: &mut BTreeMap<String, String>, key: &str, value: &T) {
    // Serialising these plain structs cannot fail.
    if let Ok(text) = serde_json::to_string(value) {
        data.insert(key.into(), text);
    }
}

fn trim_front<T>(v: &mut Vec<T>, max: usize) {
    if v.len() > max {
        v.drain(..v.len() - max);
    }
}

// ---- state: Opal ----

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct OpalState {
    #[serde(default)]
    resource_access: Vec<Fact>,
    #[serde(default)]
    group_members: Vec<Fact>,
    #[serde(default)]
    group_resources: Vec<Fact>,
    #[serde(default)]
    removed: Vec<Fact>,
}

/// One entry of Opal's state: its fields (camelCase, as documented) and the event time of the
/// change that put it there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Fact {
    #[serde(flatten)]
    fields: BTreeMap<String, String>,
    event_ts: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Section {
    ResourceAccess,
    GroupMembers,
    GroupResources,
}

/// The section an Opal event changes, whether it adds, and the entry's identity fields.
fn opal_change(e: &OpalEvent) -> (Section, bool, BTreeMap<String, String>) {
    let f = |pairs: &[(&str, &String)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    use OpalEvent::*;
    match e {
        UserAddedToResource {
            resource_type,
            user_id,
            resource_id,
            access_level,
        }
        | UserRemovedFromResource {
            resource_type,
            user_id,
            resource_id,
            access_level,
        } => (
            Section::ResourceAccess,
            matches!(e, UserAddedToResource { .. }),
            f(&[
                ("resourceId", resource_id),
                ("resourceType", resource_type),
                ("userId", user_id),
                ("accessLevel", access_level),
            ]),
        ),
        UserAddedToGroup {
            group_type,
            user_id,
            group_id,
        }
        | UserRemovedFromGroup {
            group_type,
            user_id,
            group_id,
        } => (
            Section::GroupMembers,
            matches!(e, UserAddedToGroup { .. }),
            f(&[
                ("groupId", group_id),
                ("groupType", group_type),
                ("userId", user_id),
            ]),
        ),
        ResourceAddedToGroup {
            group_type,
            resource_type,
            group_id,
            resource_id,
        }
        | ResourceRemovedFromGroup {
            group_type,
            resource_type,
            group_id,
            resource_id,
        } => (
            Section::GroupResources,
            matches!(e, ResourceAddedToGroup { .. }),
            f(&[
                ("groupId", group_id),
                ("groupType", group_type),
                ("resourceId", resource_id),
                ("resourceType", resource_type),
            ]),
        ),
    }
}

impl OpalState {
    fn section(&mut self, s: Section) -> &mut Vec<Fact> {
        match s {
            Section::ResourceAccess => &mut self.resource_access,
            Section::GroupMembers => &mut self.group_members,
            Section::GroupResources => &mut self.group_resources,
        }
    }

    /// Applies one change at `ts`; an older change never overrides a newer one for the same
    /// entry.
    fn change(&mut self, section: Section, add: bool, fields: BTreeMap<String, String>, ts: i64) {
        let tomb_fields = {
            let mut t = fields.clone();
            t.insert("section".into(), format!("{section:?}"));
            t
        };
        let newer_removal = self
            .removed
            .iter()
            .any(|r| r.fields == tomb_fields && r.event_ts > ts);
        let entries = self.section(section);
        let existing = entries.iter().position(|f| f.fields == fields);
        if add {
            if newer_removal {
                return;
            }
            match existing {
                Some(i) => entries[i].event_ts = entries[i].event_ts.max(ts),
                None => entries.push(Fact {
                    fields,
                    event_ts: ts,
                }),
            }
            self.removed
                .retain(|r| !(r.fields == tomb_fields && r.event_ts <= ts));
        } else {
            if let Some(i) = existing {
                if entries[i].event_ts > ts {
                    return;
                }
                entries.remove(i);
            }
            self.removed.retain(|r| r.fields != tomb_fields);
            self.removed.push(Fact {
                fields: tomb_fields,
                event_ts: ts,
            });
            trim_front(&mut self.removed, TOMBSTONES);
        }
    }

    fn sort(&mut self) {
        for s in [
            Section::ResourceAccess,
            Section::GroupMembers,
            Section::GroupResources,
        ] {
            self.section(s).sort_by(|a, b| a.fields.cmp(&b.fields));
        }
    }
}

// ---- state: Membrane ----

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct MembraneState {
    #[serde(default)]
    organizations: Vec<Value>,
    #[serde(default)]
    invitations: Vec<Value>,
    #[serde(default)]
    access_requests: Vec<Value>,
}

impl MembraneState {
    fn add(&mut self, e: &MembraneEvent) {
        let (list, entry) = match e {
            MembraneEvent::OrgCreated {
                name,
                workspace_name,
                org_id,
                org,
                user,
            } => (
                &mut self.organizations,
                serde_json::json!({
                    "orgId": org_id, "name": name, "workspaceName": workspace_name,
                    "domains": org.domains, "createdBy": user.email,
                }),
            ),
            MembraneEvent::UserInvitedToOrg {
                issuer, user, org, ..
            } => (
                // The invitation URL is a credential for the invitee: not kept.
                &mut self.invitations,
                serde_json::json!({
                    "orgId": org.id, "orgName": org.name, "email": user.email,
                    "invitedBy": issuer.email,
                }),
            ),
            MembraneEvent::OrgAccessRequested { user, org_admins } => {
                let mut org_ids: Vec<&str> = org_admins
                    .iter()
                    .flat_map(|a| a.orgs.iter().map(|o| o.id.as_str()))
                    .collect();
                org_ids.sort_unstable();
                org_ids.dedup();
                (
                    &mut self.access_requests,
                    serde_json::json!({
                        "userId": user.id, "email": user.email, "name": user.name,
                        "orgIds": org_ids,
                    }),
                )
            }
        };
        if !list.contains(&entry) {
            list.push(entry);
        }
    }
}

fn apply_state(
    docs: &mut Docs,
    data: &BTreeMap<String, String>,
    delivery: &Delivery,
) -> Result<(), ViewError> {
    let ts = delivery.event_ts.unwrap_or_default();
    let Docs { opal, membrane, .. } = docs;
    for event in &delivery.events {
        match &event.detail {
            Detail::Opal(e) => {
                let state = match opal {
                    Some(s) => s,
                    None => opal.insert(read(data, "opal.json")?.unwrap_or_default()),
                };
                let (section, add, fields) = opal_change(e);
                state.change(section, add, fields, ts);
            }
            Detail::Membrane(e) => {
                let state = match membrane {
                    Some(s) => s,
                    None => membrane.insert(read(data, "membrane.json")?.unwrap_or_default()),
                };
                state.add(e);
            }
            // The operator allows `state` for Opal and Membrane only.
            Detail::Other => {}
        }
    }
    Ok(())
}

// ---- latest and log ----

/// A valid ConfigMap key for an event type.
pub fn latest_key(event_type: &str) -> String {
    format!("{}.json", hookwarden_api::text::key_chars(event_type, 240))
}

fn apply_latest(docs: &mut Docs, delivery: &Delivery) {
    let Docs { book, latest, .. } = docs;
    let payload = String::from_utf8_lossy(&delivery.body).into_owned();
    for event in &delivery.events {
        let key = latest_key(&event.event_type);
        if let Some(ts) = delivery.event_ts {
            // Opal: a late, older delivery does not replace a newer payload.
            match book.latest_ts.get(&key) {
                Some(&seen) if seen > ts => continue,
                _ => {
                    book.latest_ts.insert(key.clone(), ts);
                }
            }
        }
        latest.insert(key, payload.clone());
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct LogEntry {
    received_at: i64,
    event_types: Vec<String>,
    payload: String,
}

fn apply_log(
    docs: &mut Docs,
    data: &BTreeMap<String, String>,
    delivery: &Delivery,
    received_at: i64,
) -> Result<(), ViewError> {
    let log = match &mut docs.log {
        Some(log) => log,
        None => docs.log.insert(read(data, "log.json")?.unwrap_or_default()),
    };
    log.push(LogEntry {
        received_at,
        event_types: delivery
            .events
            .iter()
            .map(|e| e.event_type.to_string())
            .collect(),
        payload: String::from_utf8_lossy(&delivery.body).into_owned(),
    });
    trim_front(log, LOG_ENTRIES);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Provider;
    use crate::payload::parse;
    use axum::http::HeaderMap;

    /// Opal delivery `n` (its key), sent at `ts`, of `events` (JSON objects, comma-joined).
    pub(crate) fn opal(n: u8, ts: i64, events: &str) -> Delivery {
        let body = format!(r#"{{"event_ts":{ts},"organization_id":"o","events":[{events}]}}"#);
        let parsed = parse(Provider::Opal, &HeaderMap::new(), body.as_bytes()).unwrap();
        Delivery {
            key: [n; 32],
            events: parsed.events,
            body: body.into(),
            content_type: None,
            trace: None,
            event_ts: parsed.event_ts,
        }
    }

    const ADD: &str = r#"{"event_type":"USER_ADDED_TO_RESOURCE","resource_type":"CUSTOM","user_id":"user@example.com","resource_id":"r1","access_level":"admin"}"#;
    const REMOVE: &str = r#"{"event_type":"USER_REMOVED_FROM_RESOURCE","resource_type":"CUSTOM","user_id":"user@example.com","resource_id":"r1","access_level":"admin"}"#;
    pub(crate) const JOIN: &str = r#"{"event_type":"USER_ADDED_TO_GROUP","group_type":"G","user_id":"user@example.com","group_id":"g1"}"#;

    fn access(data: &BTreeMap<String, String>) -> Vec<(String, i64)> {
        let s: OpalState = serde_json::from_str(&data["opal.json"]).unwrap();
        s.resource_access
            .iter()
            .map(|f| (f.fields["userId"].clone(), f.event_ts))
            .collect()
    }

    #[test]
    fn opal_state_adds_removes_and_applies_each_delivery_once() {
        let mut data = BTreeMap::new();
        let add = opal(1, 100, &format!("{ADD},{JOIN}"));
        assert_eq!(apply(ConfigMapMode::State, &mut data, &add, 0), Ok(true));
        assert_eq!(access(&data), [("user@example.com".to_string(), 100)]);
        let doc: Value = serde_json::from_str(&data["opal.json"]).unwrap();
        assert_eq!(doc["groupMembers"][0]["groupId"], "g1");
        assert_eq!(doc["resourceAccess"][0]["accessLevel"], "admin");
        // the same delivery again changes nothing
        let before = data.clone();
        assert_eq!(apply(ConfigMapMode::State, &mut data, &add, 5), Ok(false));
        assert_eq!(data, before);
        // removal
        assert_eq!(
            apply(ConfigMapMode::State, &mut data, &opal(2, 200, REMOVE), 0),
            Ok(true)
        );
        assert!(access(&data).is_empty());
        // keys are valid ConfigMap keys: no user id in a key
        assert!(data.keys().all(|k| !k.contains('@')));
    }

    /// A batch gives what the same deliveries give one by one, in every mode: the same data,
    /// the same answer for each, including repeats, late older events and deliveries that
    /// would not fit (refused alone, the others recorded).
    #[test]
    fn a_batch_is_its_deliveries_one_by_one() {
        let users = ["a@x.com", "b@x.com", "c@x.com"];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let (mut mixed, mut repeats) = (0, 0);
        for round in 0..120 {
            let mode = [
                ConfigMapMode::State,
                ConfigMapMode::Latest,
                ConfigMapMode::Log,
            ][round % 3];
            let deliveries: Vec<Delivery> = (0..1 + next(12))
                .map(|_| {
                    let user = users[next(3) as usize];
                    let kind = ["USER_ADDED_TO_RESOURCE", "USER_REMOVED_FROM_RESOURCE", "USER_ADDED_TO_GROUP"][next(3) as usize];
                    let padding = if next(3) == 0 { "p".repeat(300_000) } else { String::new() };
                    let event = format!(
                        r#"{{"event_type":"{kind}","resource_type":"CUSTOM","group_type":"G","user_id":"{user}{padding}","resource_id":"r{}","group_id":"g1","access_level":"admin"}}"#,
                        next(2)
                    );
                    // a key repeats now and then: a retry in the same batch
                    opal(next(10) as u8, 100 + next(5) as i64, &event)
                })
                .collect();
            let refs: Vec<&Delivery> = deliveries.iter().collect();
            let mut one_by_one = BTreeMap::new();
            let mut together = BTreeMap::new();
            // both start from the same earlier state
            for d in &refs[..refs.len() / 2] {
                let _ = apply(mode, &mut one_by_one, d, 7);
                let _ = apply(mode, &mut together, d, 7);
            }
            let singles: Vec<_> = refs
                .iter()
                .map(|d| apply(mode, &mut one_by_one, d, 9))
                .collect();
            let batch = apply_all(mode, &mut together, &refs, 9);
            assert_eq!(batch, singles, "round {round} ({mode:?})");
            assert_eq!(together, one_by_one, "round {round} ({mode:?})");
            mixed += usize::from(singles.contains(&Ok(true)) && singles.iter().any(Result::is_err));
            repeats += usize::from(singles.contains(&Ok(false)));
        }
        // The rounds reach both the fallback and repeats.
        assert!(mixed >= 3 && repeats >= 20, "{mixed} {repeats}");
    }

    #[test]
    fn an_older_opal_delivery_never_overrides_a_newer_one() {
        let mut data = BTreeMap::new();
        apply(ConfigMapMode::State, &mut data, &opal(1, 200, REMOVE), 0).unwrap();
        // the add happened before the removal but arrives after it
        apply(ConfigMapMode::State, &mut data, &opal(2, 100, ADD), 0).unwrap();
        assert!(access(&data).is_empty());
        // a newer add does bring it back
        apply(ConfigMapMode::State, &mut data, &opal(3, 300, ADD), 0).unwrap();
        assert_eq!(access(&data), [("user@example.com".to_string(), 300)]);
        // and an older removal does not take it away
        apply(ConfigMapMode::State, &mut data, &opal(4, 250, REMOVE), 0).unwrap();
        assert_eq!(access(&data).len(), 1);
    }

    #[test]
    fn membrane_state_lists_orgs_invitations_and_requests_without_the_invitation_url() {
        let bodies = [
            r#"{"type":"user-invited-to-org","invitationUrl":"https://x/secret-token","issuer":{"name":"A","email":"admin@c.com"},"user":{"email":"new@c.com"},"org":{"id":"org1","name":"O"}}"#,
            r#"{"type":"org-access-requested","user":{"id":"u1","email":"e@c.com","name":"E"},"orgAdmins":[{"email":"admin@c.com","orgs":[{"id":"org1","name":"O"}]}]}"#,
            r#"{"type":"org-created","name":"N","workspaceName":"W","orgId":"org2","org":{"id":"org2","name":"N","domains":["c.com"]},"user":{"name":"C","email":"c@c.com"}}"#,
        ];
        let mut data = BTreeMap::new();
        for (i, body) in bodies.iter().enumerate() {
            let parsed = parse(Provider::Membrane, &HeaderMap::new(), body.as_bytes()).unwrap();
            let d = Delivery {
                key: [i as u8; 32],
                events: parsed.events,
                body: body.to_string().into(),
                content_type: None,
                trace: None,
                event_ts: None,
            };
            assert_eq!(apply(ConfigMapMode::State, &mut data, &d, 0), Ok(true));
        }
        let doc: Value = serde_json::from_str(&data["membrane.json"]).unwrap();
        assert_eq!(doc["organizations"][0]["orgId"], "org2");
        assert_eq!(doc["invitations"][0]["email"], "new@c.com");
        assert_eq!(doc["accessRequests"][0]["orgIds"][0], "org1");
        assert!(!data["membrane.json"].contains("secret-token"));
    }

    #[test]
    fn latest_keeps_the_newest_payload_per_type() {
        let mut data = BTreeMap::new();
        apply(ConfigMapMode::Latest, &mut data, &opal(1, 200, JOIN), 0).unwrap();
        apply(ConfigMapMode::Latest, &mut data, &opal(2, 100, JOIN), 0).unwrap();
        assert!(data["USER_ADDED_TO_GROUP.json"].contains("200"));
        apply(ConfigMapMode::Latest, &mut data, &opal(3, 300, JOIN), 0).unwrap();
        assert!(data["USER_ADDED_TO_GROUP.json"].contains("300"));
        assert_eq!(latest_key("issues opened/x"), "issues_opened_x.json");
    }

    #[test]
    fn log_is_bounded_and_oversize_is_refused_not_truncated() {
        let mut data = BTreeMap::new();
        for n in 0..(LOG_ENTRIES + 5) {
            let mut d = opal(0, n as i64, JOIN);
            d.key[..8].copy_from_slice(&(n as u64).to_be_bytes());
            apply(ConfigMapMode::Log, &mut data, &d, n as i64).unwrap();
        }
        let log: Vec<LogEntry> = serde_json::from_str(&data["log.json"]).unwrap();
        assert_eq!(log.len(), LOG_ENTRIES);
        assert_eq!(log.last().unwrap().received_at, (LOG_ENTRIES + 4) as i64);

        let mut data = BTreeMap::new();
        data.insert("other".into(), "x".repeat(MAX_BYTES));
        let r = apply(ConfigMapMode::Log, &mut data, &opal(9, 1, JOIN), 0);
        assert!(matches!(r, Err(ViewError::TooLarge(_))), "{r:?}");
    }

    #[test]
    fn a_key_this_receiver_did_not_write_is_reported() {
        let mut data = BTreeMap::new();
        data.insert("opal.json".to_string(), "not json".to_string());
        assert_eq!(
            apply(ConfigMapMode::State, &mut data, &opal(1, 1, ADD), 0),
            Err(ViewError::Corrupt("opal.json".into()))
        );
    }
}

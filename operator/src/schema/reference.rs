//! The `Webhook` API reference in Markdown, generated from the CRD's OpenAPI schema (the same
//! schema the API server validates with), so the documentation cannot drift from the API.
//! Pure: schema in, text out.

use serde_json::Value;

/// Markdown for every field of `spec` and `status`, in schema order, one table row each.
pub fn markdown(schema: &Value) -> String {
    let mut out = String::from(
        "# `Webhook` reference (`hookwarden.io/v1alpha1`)\n\n\
         Generated from the CRD's schema by `make crds`; do not edit. Fields of Kubernetes' own\n\
         types (resources, tolerations, affinity, conditions) are described in the Kubernetes\n\
         API reference.\n",
    );
    for section in ["spec", "status"] {
        let Some(node) = schema.pointer(&format!("/properties/{section}")) else {
            continue;
        };
        out.push_str(&format!("\n## `{section}`\n\n"));
        if let Some(d) = description(node) {
            out.push_str(&format!("{d}\n\n"));
        }
        out.push_str("| field | type | required | description |\n|---|---|---|---|\n");
        let mut rows = Vec::new();
        fields(node, section, 0, &mut rows);
        for row in rows {
            out.push_str(&row);
        }
    }
    let mut rules = Vec::new();
    validations(schema, "", &mut rules);
    if !rules.is_empty() {
        out.push_str(
            "\n## Checked at `kubectl apply`\n\n\
             The API server refuses a Webhook that breaks one of these rules (CEL, in the CRD),\n\
             with the message shown. The operator checks them too, for Webhooks stored before a\n\
             rule existed, and reports what only it can see (a missing Secret, a conflict) in\n\
             status.\n\n| where | message |\n|---|---|\n",
        );
        for row in rules {
            out.push_str(&row);
        }
    }
    out
}

/// Every `x-kubernetes-validations` message in the schema, with where it applies.
fn validations(node: &Value, path: &str, rows: &mut Vec<String>) {
    let place = if path.is_empty() {
        "(the Webhook)"
    } else {
        path
    };
    for rule in node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let message = description(&serde_json::json!({"description": rule.get("message")}));
        rows.push(format!("| `{place}` | {} |\n", message.unwrap_or_default()));
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            let field = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            validations(child, &field, rows);
        }
    }
    if let Some(items) = node.get("items") {
        validations(items, &format!("{path}[]"), rows);
    }
}

/// How deep nested objects are expanded.
const MAX_DEPTH: usize = 2;
/// Fields of Kubernetes' own types, documented by Kubernetes: not expanded.
const KUBERNETES_TYPES: [&str; 5] = [
    "affinity",
    "resources",
    "tolerations",
    "imagePullSecrets",
    "conditions",
];

fn fields(node: &Value, path: &str, depth: usize, rows: &mut Vec<String>) {
    let Some(props) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, child) in props {
        let field = format!("{path}.{name}");
        rows.push(format!(
            "| `{field}` | {} | {} | {} |\n",
            type_of(child),
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                ""
            },
            description(child).unwrap_or_default()
        ));
        if depth < MAX_DEPTH && !KUBERNETES_TYPES.contains(&name.as_str()) {
            let inner = match child.get("type").and_then(Value::as_str) {
                Some("array") => child.get("items").unwrap_or(&Value::Null),
                _ => child,
            };
            fields(inner, &field, depth + 1, rows);
        }
    }
}

fn type_of(node: &Value) -> String {
    let base = match node.get("type").and_then(Value::as_str) {
        Some("array") => format!("[]{}", type_of(node.get("items").unwrap_or(&Value::Null))),
        Some("object") if node.get("additionalProperties").is_some() => {
            let values = node.get("additionalProperties").unwrap_or(&Value::Null);
            format!("map[string]{}", type_of(values))
        }
        Some(t) => t.to_string(),
        None if node.get("x-kubernetes-int-or-string").is_some() => "int-or-string".into(),
        None => "any".into(),
    };
    let mut notes = Vec::new();
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values
            .iter()
            .filter_map(Value::as_str)
            .map(|v| format!("`{v}`"))
            .collect();
        notes.push(format!("one of {}", names.join(", ")));
    }
    match (number(node, "minimum"), number(node, "maximum")) {
        (Some(min), Some(max)) => notes.push(format!("{min}–{max}")),
        (Some(min), None) => notes.push(format!("≥ {min}")),
        (None, Some(max)) => notes.push(format!("≤ {max}")),
        (None, None) => {}
    }
    if let Some(max) = node.get("maxItems") {
        notes.push(format!("at most {max}"));
    }
    if let Some(max) = node.get("maxLength") {
        notes.push(format!("at most {max} characters"));
    }
    if notes.is_empty() {
        base
    } else {
        format!("{base} ({})", notes.join("; "))
    }
}

/// A bound as written by a person: `16` rather than the schema's `16.0`.
fn number(node: &Value, key: &str) -> Option<String> {
    let n = node.get(key)?;
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => Some(format!("{}", f as i64)),
        _ => Some(n.to_string()),
    }
}

/// A description on one line, safe inside a Markdown table cell.
fn description(node: &Value) -> Option<String> {
    let text = node.get("description")?.as_str()?;
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(one_line.replace('|', "\\|"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_types_and_descriptions_become_rows() {
        let schema = json!({
            "properties": {
                "spec": {
                    "description": "The spec.",
                    "required": ["path"],
                    "properties": {
                        "path": {"type": "string", "description": "Where | deliveries\n arrive."},
                        "provider": {"type": "string", "enum": ["opal", "membrane"]},
                        "limits": {"type": "object", "properties": {
                            "maxBodyBytes": {"type": "integer", "minimum": 1.0, "maximum": 16}
                        }},
                        "eventTypes": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "resources": {"type": "object", "properties": {"limits": {"type": "object"}}}
                    }
                }
            }
        });
        let md = markdown(&schema);
        assert!(md.contains("The spec."));
        assert!(md.contains("| `spec.path` | string | yes | Where \\| deliveries arrive. |"));
        assert!(md.contains("| `spec.provider` | string (one of `opal`, `membrane`) |  |"));
        assert!(md.contains("| `spec.limits.maxBodyBytes` | integer (1–16) |  |"));
        assert!(md.contains("| `spec.eventTypes` | []string (at most 4) |"));
        assert!(md.contains("| `spec.labels` | map[string]string |"));
        assert!(md.contains("| `spec.resources` | object |"));
        assert!(!md.contains("spec.resources.limits"));
        assert!(!md.contains("## `status`"));
        assert!(!md.contains("Checked at"));
    }

    #[test]
    fn validation_rules_are_listed_with_their_place() {
        let schema = json!({
            "x-kubernetes-validations": [{"rule": "r0", "message": "metadata.name is bad"}],
            "properties": {"spec": {"properties": {
                "path": {"type": "string", "maxLength": 256,
                         "x-kubernetes-validations": [{"rule": "r1", "message": "spec.path | m"}]},
                "eventTypes": {"type": "array", "items": {"type": "string",
                         "x-kubernetes-validations": [{"rule": "r2", "message": "empty"}]}}
            }}}
        });
        let md = markdown(&schema);
        assert!(
            md.contains("| `spec.path` | string (at most 256 characters) |"),
            "{md}"
        );
        assert!(md.contains("## Checked at `kubectl apply`"));
        assert!(
            md.contains("| `(the Webhook)` | metadata.name is bad |"),
            "{md}"
        );
        assert!(md.contains("| `spec.path` | spec.path \\| m |"), "{md}");
        assert!(md.contains("| `spec.eventTypes[]` | empty |"), "{md}");
    }
}

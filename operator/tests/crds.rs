//! crds/ is generated from the Rust types; this fails when the committed YAML is stale.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn committed_crd_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds/webhooks.hookwarden.io.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/webhooks.hookwarden.io.yaml");
    let generated = hookwarden_operator::crd_yaml().expect("render CRD");
    assert!(
        committed == generated,
        "crds/webhooks.hookwarden.io.yaml is stale: run `make crds` and commit the result"
    );
}

#[test]
fn committed_pool_crd_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds/receiverpools.hookwarden.io.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/receiverpools.hookwarden.io.yaml");
    let generated = hookwarden_operator::pool_crd_yaml().expect("render CRD");
    assert!(
        committed == generated,
        "crds/receiverpools.hookwarden.io.yaml is stale: run `make crds` and commit the result"
    );
    let crd = hookwarden_operator::pool_crd().unwrap();
    assert_eq!(crd.spec.scope, "Namespaced");
    assert!(
        crd.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .status
            .is_some()
    );
    assert!(!generated.contains("default:"), "the schema sets defaults");
}

#[test]
fn committed_reference_matches_the_code() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/webhook-reference.md");
    let committed = std::fs::read_to_string(&path).expect("docs/webhook-reference.md");
    let generated = hookwarden_operator::crd_reference().expect("render reference");
    assert!(
        committed == generated,
        "docs/webhook-reference.md is stale: run `make crds` and commit the result"
    );
}

#[test]
fn crd_is_what_users_expect() {
    let crd = hookwarden_operator::crd().unwrap();
    assert_eq!(crd.metadata.name.as_deref(), Some("webhooks.hookwarden.io"));
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["wh".to_string()][..])
    );
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Provider",
            "Path",
            "Ready",
            "Reason",
            "URL",
            "External URL",
            "Age"
        ]
    );
    let yaml = hookwarden_operator::crd_yaml().unwrap();
    // Only formats the API server knows (it warns on others at every apply).
    const KNOWN: [&str; 6] = ["int32", "int64", "float", "double", "byte", "date-time"];
    for line in yaml
        .lines()
        .filter(|l| l.trim_start().starts_with("format:"))
    {
        let format = line.trim_start().trim_start_matches("format:").trim();
        assert!(KNOWN.contains(&format), "unknown schema format {format:?}");
    }
    // Every CEL rule is in the schema once, with its message, and every string or list a
    // rule reads is bounded (the API server's cost estimate needs it).
    let rules = hookwarden_operator::schema::rules::all();
    assert_eq!(yaml.matches("- message:").count(), rules.len(), "{yaml}");
    let json = serde_json::to_value(&crd).unwrap();
    let mut unbounded = Vec::new();
    bounded(
        &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        "",
        false,
        &mut unbounded,
    );
    assert!(
        unbounded.is_empty(),
        "strings or lists under a rule without a bound: {unbounded:?}"
    );
    // No schema defaults: the API server would write them into every Webhook, and GitOps
    // tools would show them as drift against the applied manifest.
    assert!(!yaml.contains("default:"), "the schema sets defaults");
}

/// Strings and lists at or below a node with CEL rules that lack maxLength / maxItems
/// (enums are bounded by their values).
fn bounded(node: &serde_json::Value, path: &str, under_rule: bool, out: &mut Vec<String>) {
    let under = under_rule || node.get("x-kubernetes-validations").is_some();
    match node.get("type").and_then(|t| t.as_str()) {
        Some("string")
            if under && node.get("maxLength").is_none() && node.get("enum").is_none() =>
        {
            out.push(path.to_string())
        }
        Some("array") if under && node.get("maxItems").is_none() => out.push(path.to_string()),
        _ => {}
    }
    if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
        for (name, child) in props {
            // Kubernetes' own types the rules never read
            if [
                "receiver",
                "limits",
                "status",
                "metadata",
                "apiVersion",
                "kind",
                "annotations",
            ]
            .contains(&name.as_str())
            {
                continue;
            }
            bounded(child, &format!("{path}.{name}"), under, out);
        }
    }
    if let Some(items) = node.get("items") {
        bounded(items, &format!("{path}[]"), under, out);
    }
}

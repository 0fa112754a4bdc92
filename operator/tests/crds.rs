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
    use kube::CustomResourceExt;
    let crd = hookwarden_operator::crd::Webhook::crd();
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
    // No schema defaults: the API server would write them into every Webhook, and GitOps
    // tools would show them as drift against the applied manifest.
    assert!(!yaml.contains("default:"), "the schema sets defaults");
}

#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz corpus (receiver/fuzz/corpus/<target>/seed-*) from the
published vectors in receiver/tests/vectors, in the layouts hookwarden_receiver::fuzzing reads.
The fuzzer grows the corpus from these; `cargo fuzz cmin` keeps it small."""
import json
import pathlib

HERE = pathlib.Path(__file__).parent
VECTORS = HERE.parent / "tests" / "vectors"
PROVIDERS = ["opal", "membrane", "github", "slack", "stripe", "standard-webhooks",
             "shopify", "gitlab", "generic-hmac"]
HEADERS = ["x-opal-signature", "x-opal-request-timestamp", "x-signature", "x-hub-signature-256",
           "x-slack-signature", "x-slack-request-timestamp", "stripe-signature", "webhook-id",
           "webhook-timestamp", "webhook-signature", "x-shopify-hmac-sha256", "x-gitlab-token",
           "x-acme-signature", "x-acme-timestamp", "x-acme-id", "x-gitlab-event-uuid"]


def vectors():
    for name in ("opal-membrane.json", "other-schemes.json", "node-forms.json"):
        yield from json.loads((VECTORS / name).read_text())


def write(target, n, data):
    d = HERE / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{n:03}").write_bytes(data)


def main():
    extra = [
        ("gitlab", {"x-gitlab-token": "not-the-token"}, b'{"object_kind":"push"}'),
        ("generic-hmac", {"x-acme-signature": "v1=" + "0" * 64, "x-acme-timestamp": "1700000000",
                          "x-acme-id": "evt_1"}, b'{"type":"invoice.paid"}'),
    ]
    cases = [(v["scheme"], {k.lower(): str(val) for k, val in v["headers"].items()},
              v["body"].encode()) for v in vectors()] + extra
    for n, (scheme, headers, body) in enumerate(cases):
        selector = bytes([PROVIDERS.index(scheme)])
        fields = [headers.get(h, "").encode() for h in HEADERS]
        write("signature", n, selector + b"\xff".join(fields + [body]))
        write("payload", n, selector + body)
    forms = []
    for v in vectors():
        for text in (v["body"], v.get("signed")):
            if text is not None and text.encode() not in forms:
                forms.append(text.encode())
    for n, body in enumerate(forms):
        write("node_json", n, body)
    config = ("webhook: {name: opal, namespace: default, uid: u}\npath: /opal\nprovider: opal\n"
              "secretFiles: [/var/run/hookwarden/secrets/0/secret]\nsinks: {events: true}\n")
    write("config", 0, config.encode())
    write("config", 1, (config.replace("provider: opal", "provider: generic-hmac") +
                        "genericHmac: {header: X-Sig, algorithm: sha512, encoding: base64}\n").encode())


if __name__ == "__main__":
    main()

# hookwarden. `make test` and `make demo` do all set-up themselves on a fresh machine.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all build test lint docs unit chart e2e demo crds manifests bench bench-sinks bench-scale fuzz cluster-up cluster-down cluster-status images install clean

all: build

build:
	$(CARGO) build --workspace

## Every test: formatting, lints, unit tests, the chart, then the end-to-end tests on the
## project's own Kubernetes: every suite on the newest release, then every suite again on
## the oldest supported one (built from the Go module proxy on first use, about 7 minutes
## per release and 6 for the rest; cached afterwards). See tests/cluster/README.md.
test: lint unit chart e2e

## Formatting, the module graph, every shell script through shellcheck (Debian's package,
## installed on first use), the documentation (built, its links, pages and code map
## checked: tests/docs/check.py, with its own tests) and clippy.
lint: docs
	$(CARGO) fmt --all -- --check
	tests/module_graph.py
	tests/lint/shellcheck.sh
	python3 -m unittest discover -s tests/docs -p 'test_*.py'
	tests/docs/check.py --html target/book
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The documentation (docs/, book.toml) built with mdBook into target/book; mdBook is
## installed from crates.io on first use, at the version pinned in tests/docs/mdbook.sh.
docs:
	tests/docs/mdbook.sh build

unit:
	$(CARGO) test --workspace --exclude hookwarden-tests

## The Helm chart through Helm's own engine (helm-python-sdk, installed on first use): lint,
## schema, rendering with defaults and with every option, and deploy/ not stale; then its
## alerts and dashboard through promtool (Debian's prometheus package, installed on first use
## by tests/prometheus/install.sh): check rules, unit tests of every alert, dashboard queries.
chart:
	tests/chart/python -m unittest discover -s tests/chart -p 'test_chart.py' -v
	tests/chart/python -m unittest discover -s tests/chart -p 'test_alerts.py' -v

e2e:
	tests/e2e.sh

## The local cluster (the newest Kubernetes; K8S_VERSION=1.33.13 for the oldest) with
## hookwarden and the example Webhooks; stays up for you to explore.
demo:
	tests/demo.sh

## Regenerate crds/ and the API reference docs/webhook-reference.md from the Rust types (a
## unit test fails when either is stale).
crds:
	$(CARGO) run -q -p hookwarden-operator -- crd > crds/webhooks.hookwarden.io.yaml
	$(CARGO) run -q -p hookwarden-operator -- crd receiverpools > crds/receiverpools.hookwarden.io.yaml
	$(CARGO) run -q -p hookwarden-operator -- reference > docs/webhook-reference.md

## Regenerate deploy/hookwarden.yaml from the chart (a chart test fails when it is stale).
manifests:
	tests/chart/helm manifest > deploy/hookwarden.yaml

## The receiver's speed and footprint against a bare axum server (see bench/run.sh).
bench:
	bench/run.sh

## Deliveries through the receivers into the real API server, per sink (bench/sinks.sh).
bench-sinks:
	bench/sinks.sh

## 1000 Webhooks in 10 namespaces' receiver pools on the cluster: time to Ready, pods,
## memory (bench/scale.sh).
bench-scale:
	bench/scale.sh

## Fuzz every header, payload and config parser for FUZZ_SECONDS each, growing the kept
## corpus in receiver/fuzz/corpus (replayed by `make unit`). Installs cargo-fuzz if needed.
FUZZ_SECONDS ?= 300
fuzz:
	receiver/fuzz/run.sh $(FUZZ_SECONDS)

cluster-up:
	tests/cluster/cluster.sh up

cluster-down:
	tests/cluster/cluster.sh down

cluster-status:
	tests/cluster/cluster.sh status

## Build the binaries and images and (re)install hookwarden into the running cluster.
install:
	tests/install.sh

clean:
	$(CARGO) clean

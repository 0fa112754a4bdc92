# The end-to-end tests' stand-in application (tests/src/bin/hookwarden-e2e-app.rs), on the
# same base as hookwarden's images. Built by tests/cluster/images.sh when the binary exists.
ARG BASE=gcr.io/distroless/cc-debian12:nonroot
FROM ${BASE}
COPY hookwarden-e2e-app /usr/local/bin/hookwarden-e2e-app
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/hookwarden-e2e-app"]

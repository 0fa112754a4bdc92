# shellcheck shell=bash disable=SC2034 # (every variable here is for the scripts that source it)
# The versions the test cluster is built from, all from the Go module proxy (sourced by
# build.sh and cluster.sh). Changing one rebuilds that component on next use.
#
# Kubernetes: the newest stable release is the default cluster (make test, make demo);
# the oldest that k8s-openapi 0.29 (`earliest` = v1_33) supports runs second in make test.
K8S_VERSION_NEW=1.37.2
K8S_VERSION_OLD=1.33.13
# etcd 3.6, as kubeadm pins for these releases
ETCD_VERSION=3.6.16
# containerd 2.2: what Kubernetes 1.35+ asks for (2.2.0+)
CONTAINERD_VERSION=2.2.9
# cluster DNS
COREDNS_VERSION=1.14.7
# crane: OCI image tarballs without a daemon, for images imported into containerd
CRANE_VERSION=0.20.7
# Gateway API CRDs (standard channel), from the module's released manifests
GATEWAY_API_VERSION=1.6.3

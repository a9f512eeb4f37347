#!/usr/bin/env bash
# Builds the local stack's binaries from their published Go modules, once per version,
# into $MLCYCLE_CACHE/bin/<name>-<version>/. A later run finds them and returns at once.
#
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl: ./kubernetes (go.mod)
# etcd:  ./etcd (go.mod)        helm, minio: `go install module@version` (no replace lines)
# Gateway API CRDs: config/crd/standard of the sigs.k8s.io/gateway-api module, copied into
# $MLCYCLE_CACHE/crds/gateway-api-<version>/ (the same files as upstream's standard-install)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${MLCYCLE_CACHE:-$HOME/.cache/mlcycle}
# shellcheck source=versions.env
source "$here/versions.env"

# Two callers at once (a test run and a demo) wait for one build instead of racing it.
mkdir -p "$cache"
exec 9>"$cache/build.lock"
flock 9

export GOFLAGS="-trimpath -buildvcs=false"
export CGO_ENABLED=0
ldflags="-s -w"

stamp_ok() { [[ -f "$1/.complete" ]]; }
log() { printf '[toolchain] %s\n' "$*" >&2; }

build_in_module() {  # module-dir out-dir output-name-or-dir/ packages...
  local module_dir=$1 out=$2 output=$3; shift 3
  log "building $(basename "$out") (first run only; cached in $out)"
  mkdir -p "$out.partial"
  (cd "$module_dir" && go build -ldflags="$ldflags" -o "$out.partial/$output" "$@")
  rm -rf "$out"; mv "$out.partial" "$out"; touch "$out/.complete"
}

go_install() {  # out-dir module@version
  local out=$1 target=$2
  log "building $(basename "$out") (first run only; cached in $out)"
  mkdir -p "$out.partial"
  GOBIN="$out.partial" go install -ldflags="$ldflags" "$target"
  rm -rf "$out"; mv "$out.partial" "$out"; touch "$out/.complete"
}

k8s_dir="$cache/bin/kubernetes-$KUBERNETES_VERSION"
# Stamp the release into the binaries as the upstream build does; without it the
# apiserver reports v0.0.0-master, which breaks Helm charts' kubeVersion constraints.
k8s_minor=${KUBERNETES_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1"
  k8s_ldflags+=" -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done
stamp_ok "$k8s_dir" || ldflags="$ldflags$k8s_ldflags" build_in_module "$here/kubernetes" "$k8s_dir" "" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl

etcd_dir="$cache/bin/etcd-$ETCD_VERSION"
stamp_ok "$etcd_dir" || build_in_module "$here/etcd" "$etcd_dir" etcd go.etcd.io/etcd/server/v3

helm_dir="$cache/bin/helm-$HELM_VERSION"
stamp_ok "$helm_dir" || go_install "$helm_dir" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

minio_dir="$cache/bin/minio-$MINIO_VERSION"
stamp_ok "$minio_dir" || go_install "$minio_dir" "github.com/minio/minio@$MINIO_VERSION"

gateway_api_dir="$cache/crds/gateway-api-$GATEWAY_API_VERSION"
if ! stamp_ok "$gateway_api_dir"; then
  log "fetching Gateway API $GATEWAY_API_VERSION CRDs (first run only; cached in $gateway_api_dir)"
  # Outside any go.mod, so the download is of the module alone, not a dependency of ours.
  module_dir=$(cd "$cache" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [[ -d "$module_dir/config/crd/standard" ]] || { log "no config/crd/standard in '$module_dir'"; exit 1; }
  rm -rf "$gateway_api_dir.partial"; mkdir -p "$gateway_api_dir.partial"
  cp "$module_dir"/config/crd/standard/*.yaml "$gateway_api_dir.partial/"
  chmod -R u+w "$gateway_api_dir.partial"  # the module cache is read-only
  rm -rf "$gateway_api_dir"; mv "$gateway_api_dir.partial" "$gateway_api_dir"; touch "$gateway_api_dir/.complete"
fi

log "ready: $k8s_dir $etcd_dir $helm_dir $minio_dir $gateway_api_dir"

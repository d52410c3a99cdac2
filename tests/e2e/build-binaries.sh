#!/usr/bin/env bash
# Build (or find) the binaries the end-to-end tests run: kube-apiserver, etcd,
# shell-operator, and for the one-node cluster kubelet, kube-controller-manager,
# kube-scheduler, kube-proxy and kubectl (the kubectl of the stand-in base image). They go to a cache outside the repository so that `git clean` does
# not throw away a 10-minute build. Idempotent: a stamp file next to each binary records
# the inputs it was built from; when the stamp matches, the step is skipped.
#
#   tests/e2e/build-binaries.sh            # build what is missing or outdated
#   IMAGE_MAPPER_E2E_CACHE=/somewhere ...  # another cache directory
#   E2E_REBUILD=1 ...                      # ignore the stamps
#   E2E_CONTROL_PLANE_ONLY=1 ...           # only etcd, kube-apiserver, shell-operator
#
# Everything is fetched through the Go module proxy (GOPROXY) and, for etcd, apt.
set -euo pipefail

CACHE="${IMAGE_MAPPER_E2E_CACHE:-$HOME/.cache/image-mapper-e2e}"
BIN="$CACHE/bin"
SRC="$CACHE/src"

# kube-apiserver: the Kubernetes minor that shell-operator v1.20.x is built against
# (its go.mod requires k8s.io/api v0.34.8, its image ships kubectl v1.34.8).
K8S_VERSION="${E2E_K8S_VERSION:-v1.34.8}"

# shell-operator: v1.20.3 differs from v1.20.2 only in go.mod/go.sum (dependency bumps,
# no Go source change). The Go module proxy of the project's build machines serves
# v1.20.2 but not v1.20.3, and serves no v0.11.x/v0.12.x of github.com/deckhouse/module-sdk, of
# which shell-operator imports only four interface types; v0.10.4 provides the same
# ones. Where the proxy serves everything, use
#   E2E_SHELL_OPERATOR_VERSION=v1.20.3 E2E_SHELL_OPERATOR_EXTRA_REPLACES=
SHELL_OPERATOR_VERSION="${E2E_SHELL_OPERATOR_VERSION:-v1.20.2}"
SHELL_OPERATOR_EXTRA_REPLACES="${E2E_SHELL_OPERATOR_EXTRA_REPLACES-github.com/deckhouse/module-sdk=v0.10.4}"

# etcd: E2E_ETCD_SOURCE=auto takes an etcd on PATH, else installs Debian's etcd-server
# (3.4.23 on Debian 12: kube-apiserver 1.34 runs on it, without RequestWatchProgress),
# else builds etcd from the Go module proxy. E2E_ETCD_SOURCE=build always builds, at the
# version kubeadm 1.34 deploys.
ETCD_SOURCE="${E2E_ETCD_SOURCE:-auto}"
ETCD_MODULE_VERSION="${E2E_ETCD_VERSION:-v3.6.5}"

# kube-network-policies: SIG Network's reference NetworkPolicy enforcer (nftables +
# NFQUEUE), built with tests/e2e/kube-network-policies.patch (why: see its header).
KNP_VERSION="${E2E_KNP_VERSION:-v0.8.0}"
KNP_PATCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kube-network-policies.patch"

RECIPE=1 # bump when the build commands below change, to invalidate old stamps

log() { printf '[build-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[build-binaries] ERROR: %s\n' "$*" >&2; exit 1; }

# step NAME FUNCTION: run FUNCTION and print how long it took.
step() {
    local name=$1 start=$SECONDS
    log "$name: start"
    "$2"
    log "$name: done in $((SECONDS - start))s"
}

require_tools() {
    command -v go >/dev/null ||
        die "go not found. Install Go >= 1.26.4 from https://go.dev/dl/ and put it on PATH."
    command -v openssl >/dev/null ||
        die "openssl not found. Install it: apt-get install -y openssl"
    command -v kubectl >/dev/null ||
        die "kubectl not found. Install kubectl 1.33-1.35: https://kubernetes.io/docs/tasks/tools/"
    command -v python3 >/dev/null ||
        die "python3 not found. Install it: apt-get install -y python3"
    GO_VERSION=$(go env GOVERSION)
    # shell-operator's go.mod says `go 1.26.4`; older toolchains cannot build it.
    python3 - "$GO_VERSION" <<'EOF' || die "$GO_VERSION is too old: shell-operator needs Go >= 1.26.4 (https://go.dev/dl/)."
import re, sys
parts = [int(p) for p in re.findall(r"\d+", sys.argv[1])[:3]]
sys.exit(0 if (parts + [0, 0])[:3] >= [1, 26, 4] else 1)
EOF
}

# fresh NAME STAMP: true if $BIN/NAME exists and was built from STAMP.
fresh() {
    [[ -z "${E2E_REBUILD:-}" && -x "$BIN/$1" && -f "$BIN/.$1.stamp" ]] &&
        [[ "$(cat "$BIN/.$1.stamp")" == "$2" ]]
}

# Module metadata as JSON (go mod download -json), run outside any module.
mod_json() {
    (cd "$SRC" && GOFLAGS=-mod=mod go mod download -json "$@") || true
}

# json_field FIELD: read one field of the single JSON object on stdin.
json_field() {
    python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"
}

# build_wrapper DIR OUT PACKAGE LDFLAGS: tidy the wrapper module in DIR and build
# PACKAGE into $BIN/OUT, statically and without debug info.
build_wrapper() {
    local dir=$1 out=$2 pkg=$3 ldflags=$4
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" >"$dir/tools.go"
    (cd "$dir" && go mod tidy)
    (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$BIN/$out.new" "$pkg")
    mv -f "$BIN/$out.new" "$BIN/$out"
}

# staging_replaces GOMOD VERSION: one replace line per k8s.io staging module that
# k8s.io/kubernetes lists as v0.0.0. A version the proxy does not serve is swapped for
# the nearest one it does serve in the same minor (newest older patch first).
staging_replaces() {
    local gomod=$1 want=$2 json m
    local -a mods
    mapfile -t mods < <(awk '/^require/,/^\)/' "$gomod" | awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}')
    json=$(mod_json "${mods[@]/%/@$want}")
    for m in "${mods[@]}"; do
        local ver=$want
        if ! python3 -c '
import json, sys
dec, s, pos, bad = json.JSONDecoder(), sys.stdin.read(), 0, set()
while pos < len(s):
    if s[pos].isspace():
        pos += 1
        continue
    obj, pos = dec.raw_decode(s, pos)
    if obj.get("Error"):
        bad.add(obj["Path"])
sys.exit(1 if sys.argv[1] in bad else 0)' "$m" <<<"$json"; then
            ver=$(cd "$SRC" && GOFLAGS=-mod=mod go list -m -versions "$m" | tr ' ' '\n' |
                python3 -c '
import sys
want = [int(p) for p in sys.argv[1][1:].split(".")]
cands = []
for line in sys.stdin:
    v = line.strip()
    parts = v[1:].split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        continue
    p = [int(x) for x in parts]
    if p[:2] == want[:2]:
        cands.append(p)
older = sorted(c for c in cands if c < want)
newer = sorted(c for c in cands if c > want)
best = older[-1] if older else (newer[0] if newer else None)
print("v%d.%d.%d" % tuple(best) if best else "")' "$want")
            [[ -n "$ver" ]] || die "the module proxy serves no $m ${want%.*}.x"
            log "  $m@$want is not on the module proxy; using $ver" >&2
        fi
        printf '\t%s => %s %s\n' "$m" "$m" "$ver"
    done
}

# k8s_wrapper DIR NAME: write the wrapper module DIR/go.mod that builds binaries of
# k8s.io/kubernetes $K8S_VERSION, and set K8S_LDFLAGS to its version stamp.
k8s_wrapper() {
    local dir=$1 name=$2 info gomod staging commit date minor key val
    mkdir -p "$dir"
    info=$(mod_json "k8s.io/kubernetes@$K8S_VERSION")
    gomod=$(json_field GoMod <<<"$info")
    [[ -f "$gomod" ]] || die "cannot download k8s.io/kubernetes@$K8S_VERSION: $(json_field Error <<<"$info")"
    # Version stamp as upstream's hack/lib/version.sh sets it, from the module metadata.
    commit=$(python3 -c 'import json,sys; print(json.load(sys.stdin).get("Origin", {}).get("Hash", ""))' <<<"$info")
    date=$(python3 -c 'import json,sys; print(json.load(open(json.load(sys.stdin)["Info"]))["Time"])' <<<"$info")
    staging=$(staging_replaces "$gomod" "v0.${K8S_VERSION#v1.}")
    minor=${K8S_VERSION#v1.}
    minor=${minor%%.*}
    {
        echo "// Generated by tests/e2e/build-binaries.sh: builds $name $K8S_VERSION."
        echo "module e2e.local/$name"
        echo
        grep -E '^(go|godebug) ' "$gomod"
        echo
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo
        echo "replace ("
        echo "$staging"
        echo ")"
    } >"$dir/go.mod"
    rm -f "$dir/go.sum"
    K8S_LDFLAGS="-s -w"
    for kv in "gitVersion=$K8S_VERSION" "gitMajor=1" "gitMinor=$minor" "gitCommit=$commit" \
        "gitTreeState=clean" "buildDate=$date"; do
        key=${kv%%=*}
        val=${kv#*=}
        K8S_LDFLAGS+=" -X k8s.io/component-base/version.$key=$val -X k8s.io/client-go/pkg/version.$key=$val"
    done
}

build_kube_apiserver() {
    local stamp="kube-apiserver $K8S_VERSION $GO_VERSION recipe=$RECIPE"
    if fresh kube-apiserver "$stamp"; then
        log "kube-apiserver $K8S_VERSION: up to date"
        return
    fi
    local dir="$SRC/kube-apiserver"
    k8s_wrapper "$dir" kube-apiserver
    log "  go build k8s.io/kubernetes/cmd/kube-apiserver (first build: 6-15 min on 2 cores)"
    build_wrapper "$dir" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$K8S_LDFLAGS"
    echo "$stamp" >"$BIN/.kube-apiserver.stamp"
    log "  $("$BIN/kube-apiserver" --version)"
}

# The rest of a one-node cluster (tests/e2e/realcluster.py) and the kubectl of the
# stand-in base image, from the same k8s.io/kubernetes module. One wrapper module
# imports all of them; `go mod tidy` over all imports is needed (the kubelet pulls in
# modules, e.g. the portworx volume plugin's, that kube-apiserver does not).
KUBE_NODE_BINARIES=(kubelet kube-controller-manager kube-scheduler kube-proxy kubectl)

build_kube_node() {
    local stamp="%s $K8S_VERSION $GO_VERSION recipe=$RECIPE" name todo=()
    for name in "${KUBE_NODE_BINARIES[@]}"; do
        # shellcheck disable=SC2059
        if fresh "$name" "$(printf "$stamp" "$name")"; then
            log "$name $K8S_VERSION: up to date"
        else
            todo+=("$name")
        fi
    done
    [[ ${#todo[@]} -gt 0 ]] || return 0
    local dir="$SRC/kube-node"
    k8s_wrapper "$dir" kube-node
    {
        printf '//go:build tools\n\npackage tools\n\nimport (\n'
        for name in "${KUBE_NODE_BINARIES[@]}"; do
            printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$name"
        done
        printf ')\n'
    } >"$dir/tools.go"
    (cd "$dir" && go mod tidy)
    for name in "${todo[@]}"; do
        log "  go build k8s.io/kubernetes/cmd/$name (5-60 s each once kube-apiserver is built)"
        (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags="$K8S_LDFLAGS" \
            -o "$BIN/$name.new" "k8s.io/kubernetes/cmd/$name")
        mv -f "$BIN/$name.new" "$BIN/$name"
        # shellcheck disable=SC2059
        printf "$stamp\n" "$name" >"$BIN/.$name.stamp"
    done
    log "  $("$BIN/kubelet" --version)"
}

build_shell_operator() {
    local stamp="shell-operator $SHELL_OPERATOR_VERSION [$SHELL_OPERATOR_EXTRA_REPLACES] $GO_VERSION recipe=$RECIPE"
    if fresh shell-operator "$stamp"; then
        log "shell-operator $SHELL_OPERATOR_VERSION: up to date"
        return
    fi
    local dir="$SRC/shell-operator" info gomod
    mkdir -p "$dir"
    info=$(mod_json "github.com/flant/shell-operator@$SHELL_OPERATOR_VERSION")
    gomod=$(json_field GoMod <<<"$info")
    [[ -f "$gomod" ]] ||
        die "cannot download github.com/flant/shell-operator@$SHELL_OPERATOR_VERSION: $(json_field Error <<<"$info")"
    {
        echo "// Generated by tests/e2e/build-binaries.sh: builds shell-operator $SHELL_OPERATOR_VERSION."
        echo "module e2e.local/shell-operator"
        echo
        grep -E '^(go|godebug) ' "$gomod"
        echo
        echo "require github.com/flant/shell-operator $SHELL_OPERATOR_VERSION"
        echo
        # `go install pkg@version` ignores replace directives, so repeat them here.
        awk '/^replace \($/ {inblock=1; next} inblock && /^\)/ {inblock=0; next}
             inblock && NF {print "replace " $0} /^replace [^(]/ {print}' "$gomod"
        for r in $SHELL_OPERATOR_EXTRA_REPLACES; do
            echo "replace ${r%%=*} => ${r%%=*} ${r#*=}"
        done
    } >"$dir/go.mod"
    rm -f "$dir/go.sum"
    build_wrapper "$dir" shell-operator github.com/flant/shell-operator/cmd/shell-operator \
        "-s -w -X github.com/flant/shell-operator/pkg/app.Version=$SHELL_OPERATOR_VERSION"
    echo "$stamp" >"$BIN/.shell-operator.stamp"
    log "  $("$BIN/shell-operator" version 2>&1 | head -1)"
}

build_kube_network_policies() {
    local sum stamp
    sum=$(sha256sum "$KNP_PATCH" | cut -c1-16)
    stamp="kube-network-policies $KNP_VERSION patch=$sum $GO_VERSION recipe=$RECIPE"
    if fresh kube-network-policies "$stamp"; then
        log "kube-network-policies $KNP_VERSION: up to date"
        return
    fi
    local dir="$SRC/kube-network-policies" info moddir gomod
    info=$(mod_json "sigs.k8s.io/kube-network-policies@$KNP_VERSION")
    moddir=$(json_field Dir <<<"$info")
    gomod=$(json_field GoMod <<<"$info")
    [[ -d "$moddir" ]] ||
        die "cannot download sigs.k8s.io/kube-network-policies@$KNP_VERSION: $(json_field Error <<<"$info")"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp -r "$moddir" "$dir/src"
    chmod -R u+w "$dir/src"
    (cd "$dir/src" && patch -p1 --forward --quiet <"$KNP_PATCH") ||
        die "$KNP_PATCH does not apply to kube-network-policies $KNP_VERSION"
    {
        echo "// Generated by tests/e2e/build-binaries.sh: builds kube-network-policies $KNP_VERSION, patched."
        echo "module e2e.local/kube-network-policies"
        echo
        grep -E '^go ' "$gomod"
        echo
        echo "require sigs.k8s.io/kube-network-policies $KNP_VERSION"
        echo
        echo "replace sigs.k8s.io/kube-network-policies => ./src"
    } >"$dir/go.mod"
    build_wrapper "$dir" kube-network-policies sigs.k8s.io/kube-network-policies/cmd "-s -w"
    echo "$stamp" >"$BIN/.kube-network-policies.stamp"
    log "  kube-network-policies $KNP_VERSION (patched) built"
}

# etcd_version PATH: "3.4.23" for an etcd binary.
etcd_version() {
    "$1" --version 2>/dev/null | awk '/^etcd Version:/ {print $3}'
}

build_etcd() {
    local system=""
    if [[ "$ETCD_SOURCE" == auto ]]; then
        system=$(command -v etcd || true)
        if [[ -z "$system" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
            log "  installing Debian's etcd-server"
            # The package's systemd unit does not start without systemd; we start our own.
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server; } >/dev/null ||
                log "  apt-get install etcd-server failed; building etcd instead"
            system=$(command -v etcd || true)
        fi
    fi
    if [[ -n "$system" ]]; then
        local stamp
        stamp="etcd system $system $(etcd_version "$system")"
        if ! fresh etcd "$stamp"; then
            ln -sfn "$system" "$BIN/etcd"
            echo "$stamp" >"$BIN/.etcd.stamp"
        fi
        log "etcd $(etcd_version "$system"): $system"
        return
    fi
    local stamp="etcd $ETCD_MODULE_VERSION $GO_VERSION recipe=$RECIPE"
    if fresh etcd "$stamp"; then
        log "etcd $ETCD_MODULE_VERSION: up to date"
        return
    fi
    rm -f "$BIN/etcd"
    log "  go build go.etcd.io/etcd/server/v3@$ETCD_MODULE_VERSION"
    local dir="$SRC/etcd" info gomod
    mkdir -p "$dir"
    info=$(mod_json "go.etcd.io/etcd/server/v3@$ETCD_MODULE_VERSION")
    gomod=$(json_field GoMod <<<"$info")
    [[ -f "$gomod" ]] ||
        die "no etcd: install Debian's etcd-server (apt-get install etcd-server) or make go.etcd.io/etcd/server/v3@$ETCD_MODULE_VERSION downloadable"
    {
        echo "module e2e.local/etcd"
        echo
        grep -E '^go ' "$gomod"
        echo
        echo "require go.etcd.io/etcd/server/v3 $ETCD_MODULE_VERSION"
    } >"$dir/go.mod"
    rm -f "$dir/go.sum"
    build_wrapper "$dir" etcd go.etcd.io/etcd/server/v3 "-s -w"
    echo "$stamp" >"$BIN/.etcd.stamp"
    log "  etcd $(etcd_version "$BIN/etcd")"
}

main() {
    local start=$SECONDS
    mkdir -p "$BIN" "$SRC"
    log "cache: $CACHE"
    require_tools
    step etcd build_etcd
    step kube-apiserver build_kube_apiserver
    step shell-operator build_shell_operator
    if [[ -z "${E2E_CONTROL_PLANE_ONLY:-}" ]]; then
        step kube-node build_kube_node
        step kube-network-policies build_kube_network_policies
    fi
    log "all binaries ready in $BIN ($((SECONDS - start))s)"
}

main "$@"

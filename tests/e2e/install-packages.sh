#!/usr/bin/env bash
# Install the Debian packages the one-node e2e cluster, the image build and `make demo`
# run (tests/e2e/realcluster.py, build-standin-base.sh, `make image`). Idempotent and
# quick when everything is present: apt is only called for what is missing.
#   tests/e2e/install-packages.sh          # as root, on Debian 12 or a derivative
set -euo pipefail

# command -> package
declare -A NEED=(
    [containerd]=containerd
    [runc]=runc
    [/usr/lib/cni/bridge]=containernetworking-plugins
    [docker-registry]=docker-registry
    [skopeo]=skopeo
    [buildah]=buildah
    [/bin/busybox]=busybox-static
    [iptables]=iptables
    [nft]=nftables
    [conntrack]=conntrack
    [ip]=iproute2
    [nsenter]=util-linux
    [setpriv]=util-linux
    [debootstrap]=debootstrap
    [openssl]=openssl
    [etcd]=etcd-server
)

missing=()
for what in "${!NEED[@]}"; do
    if [[ "$what" == /* ]]; then [[ -e "$what" ]] && continue
    else command -v "$what" >/dev/null && continue
    fi
    missing+=("${NEED[$what]}")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "[install-packages] all present"
    exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
[[ "$(id -u)" == 0 ]] || { echo "[install-packages] run as root to install: ${missing[*]}" >&2; exit 1; }
command -v apt-get >/dev/null || { echo "[install-packages] no apt-get; install: ${missing[*]}" >&2; exit 1; }
echo "[install-packages] apt-get install ${missing[*]}"
apt-get update -qq
# etcd-server's and containerd's units do not start without systemd; the tests start their own.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
echo "[install-packages] done"

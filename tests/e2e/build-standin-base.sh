#!/usr/bin/env bash
# Build the stand-in for the runtime image's base (ghcr.io/flant/shell-operator:v1.20.3),
# which cannot be pulled on a machine without access to ghcr.io. It is made from the same
# ingredients as the release base plus the packages the Dockerfile would add there:
#
#   release base (Alpine 3.21)            stand-in (Debian 12 minbase)
#   /shell-operator v1.20.3 (flant build) /shell-operator built by build-binaries.sh
#   /bin/kubectl                          /bin/kubectl v1.34.8 built by build-binaries.sh
#   tini, bash, sed, ca-certificates,     tini, bash, sed, ca-certificates (Debian)
#   curl, jq, /frameworks, /shell_lib.sh  (not included: the hooks are Python)
#   python3 py3-yaml py3-jsonpatch        python3 python3-yaml python3-jsonpatch openssl
#   openssl: added by the Dockerfile      (already in the base: Debian has no apk)
#
# Same entrypoint (/sbin/tini -- /shell-operator start), WORKDIR /, SHELL_OPERATOR_HOOKS_DIR
# and LOG_TYPE. The result is the local image localhost/image-mapper/standin-base:v1.20.3
# in buildah's storage (docs/install.md explains how to use it). Cached: the Debian root
# file system under $CACHE/standin, the image is rebuilt only when an input changes.
#
#   tests/e2e/build-standin-base.sh        # needs root, debootstrap, buildah (installed with apt)
set -euo pipefail

CACHE="${IMAGE_MAPPER_E2E_CACHE:-$HOME/.cache/image-mapper-e2e}"
BIN="$CACHE/bin"
DIR="$CACHE/standin"
IMAGE="${STANDIN_IMAGE:-localhost/image-mapper/standin-base:v1.20.3}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=python3,python3-yaml,python3-jsonpatch,openssl,ca-certificates,tini,bash,sed
RECIPE=1

log() { printf '[standin-base %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[standin-base] ERROR: %s\n' "$*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || die "run as root (debootstrap and buildah need it)"
for tool in debootstrap buildah; do
    command -v "$tool" >/dev/null ||
        die "$tool not found: apt-get install -y $tool (tests/e2e/install-packages.sh installs it)"
done
for b in shell-operator kubectl; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b missing: run tests/e2e/build-binaries.sh first"
done
mkdir -p "$DIR"

# 1. Debian root file system with the packages (the slow part: about a minute).
rootfs_stamp="$SUITE $PACKAGES recipe=$RECIPE"
if [[ ! -f "$DIR/rootfs.stamp" || "$(cat "$DIR/rootfs.stamp")" != "$rootfs_stamp" ]]; then
    log "debootstrap $SUITE minbase + $PACKAGES (first run only, about a minute)"
    rm -rf "$DIR/rootfs.new"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$DIR/rootfs.new" "$MIRROR" \
        >"$DIR/debootstrap.log" 2>&1 || { tail -20 "$DIR/debootstrap.log"; die "debootstrap failed"; }
    # Smaller image: no package lists, caches, documentation or locales.
    rm -rf "$DIR/rootfs.new"/var/lib/apt/lists/* "$DIR/rootfs.new"/var/cache/apt/* \
        "$DIR/rootfs.new"/usr/share/doc/* "$DIR/rootfs.new"/usr/share/man/* \
        "$DIR/rootfs.new"/usr/share/locale/* "$DIR/rootfs.new"/var/log/*
    rm -rf "$DIR/rootfs"
    mv "$DIR/rootfs.new" "$DIR/rootfs"
    echo "$rootfs_stamp" >"$DIR/rootfs.stamp"
fi

# 2. The image: root file system + the two Go binaries + the release base's config.
image_stamp="$rootfs_stamp $(sha256sum "$BIN/shell-operator" "$BIN/kubectl" | awk '{print $1}' | tr '\n' ' ')"
if [[ -f "$DIR/image.stamp" && "$(cat "$DIR/image.stamp")" == "$image_stamp" ]] &&
    buildah inspect --type image "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE: up to date"
    exit 0
fi
log "assembling $IMAGE"
ctr=$(buildah from --quiet scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$(buildah mount "$ctr")
cp -a "$DIR/rootfs/." "$mnt/"
install -m 0755 "$BIN/shell-operator" "$mnt/shell-operator"
install -m 0755 "$BIN/kubectl" "$mnt/usr/bin/kubectl"
ln -sfn /usr/bin/tini "$mnt/sbin/tini"
mkdir -p "$mnt/hooks"
buildah umount "$ctr" >/dev/null
buildah config --entrypoint '["/sbin/tini", "--", "/shell-operator"]' --cmd start \
    --workingdir / --env SHELL_OPERATOR_HOOKS_DIR=/hooks --env LOG_TYPE=json \
    --label org.opencontainers.image.description="stand-in for ghcr.io/flant/shell-operator:v1.20.3 (tests/e2e/build-standin-base.sh)" \
    "$ctr"
buildah commit --quiet --rm "$ctr" "$IMAGE" >/dev/null
trap - EXIT
echo "$image_stamp" >"$DIR/image.stamp"
log "$IMAGE ready"

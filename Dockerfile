# image-mapper runtime image: the released shell-operator plus Python and the
# image-mapper hooks. Build from the repository root (docs/install.md):
#   make image IMG=registry.example.com/image-mapper:v0.1.0
#   buildah bud -t registry.example.com/image-mapper:v0.1.0 .    (or docker/podman build)
# BASE_IMAGE is the only build argument. Its default is the release base; a base
# without apk must already contain python3, PyYAML, jsonpatch and openssl (the
# stand-in made by tests/e2e/build-standin-base.sh does; docs/install.md lists
# how it differs from the release base).
ARG BASE_IMAGE=ghcr.io/flant/shell-operator:v1.20.3
FROM ${BASE_IMAGE}

# python3 runs the hooks; py3-yaml and py3-jsonpatch are the runtime
# dependencies (requirements.txt); openssl is for bin/gen-certs. The base image
# already has kubectl. `pyc` pulls in the bytecode of the standard library and
# of those packages (Alpine ships it apart): without it every hook process
# would compile the modules it imports. Package versions come from the base
# image's Alpine release, which the pinned base tag fixes. The python3 -B line
# fails the build if that bytecode is missing (-B: it must not write its own),
# on any base. The user is written to /etc/passwd and /etc/group directly, so
# that busybox and Debian bases need no adduser.
# hadolint ignore=DL3018
RUN if command -v apk >/dev/null; then apk add --no-cache python3 pyc py3-yaml py3-jsonpatch openssl; fi \
 && python3 -B -c 'import importlib.util as u, os, sys, yaml, jsonpatch; sys.exit(not all(os.path.exists(u.cache_from_source(m.__file__)) for m in (os, yaml, jsonpatch)))' \
 && command -v openssl kubectl >/dev/null \
 && echo 'image-mapper:x:65532:' >>/etc/group \
 && echo 'image-mapper:x:65532:65532:image-mapper:/nonexistent:/sbin/nologin' >>/etc/passwd

COPY lib/ /opt/image-mapper/lib/
COPY bin/ /opt/image-mapper/bin/
# Only the three hooks: shell-operator runs every executable file under /hooks.
COPY hooks/sync.py hooks/mutate.py hooks/validate.py /hooks/

# The root filesystem is read-only at run time, so the bytecode must be made
# now; otherwise every admission would compile the library again.
# `image-mapper` is the CLI (python3 -m imagemapper), for kubectl exec.
RUN python3 -m compileall -q /opt/image-mapper/lib \
 && PYTHONPATH=/opt/image-mapper/lib python3 -m imagemapper.bundle \
 && PYTHONPATH=/opt/image-mapper/lib python3 -m imagemapper.selftest \
 && chmod 0755 /hooks/sync.py /hooks/mutate.py /hooks/validate.py /opt/image-mapper/bin/* \
 && printf '#!/bin/sh\nexec python3 -m imagemapper "$@"\n' >/usr/local/bin/image-mapper \
 && chmod 0755 /usr/local/bin/image-mapper

ENV PYTHONPATH=/opt/image-mapper/lib \
    PYTHONDONTWRITEBYTECODE=1 \
    SHELL_OPERATOR_HOOKS_DIR=/hooks \
    SHELL_OPERATOR_TMP_DIR=/tmp/shell-operator \
    DEBUG_UNIX_SOCKET=/tmp/shell-operator/debug.socket \
    LOG_TYPE=json

USER 65532:65532

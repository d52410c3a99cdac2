# image-mapper runtime image: the released shell-operator plus Python and the
# image-mapper hooks. Build from the repository root:
#   docker build -t ghcr.io/image-mapper/image-mapper:v0.1.0 .
FROM ghcr.io/flant/shell-operator:v1.20.3

# python3 runs the hooks; py3-yaml and py3-jsonpatch are the runtime
# dependencies (requirements.txt); openssl is for bin/gen-certs. The base image
# already has kubectl. `pyc` pulls in the bytecode of the standard library and
# of those packages (Alpine ships it apart): without it every hook process
# would compile the modules it imports. Package versions come from the base
# image's Alpine release, which the pinned base tag fixes. The python3 -B line
# fails the build if that bytecode is missing (-B: it must not write its own).
# hadolint ignore=DL3018
RUN apk add --no-cache python3 pyc py3-yaml py3-jsonpatch openssl \
 && python3 -B -c 'import importlib.util as u, os, sys, yaml; sys.exit(not all(os.path.exists(u.cache_from_source(m.__file__)) for m in (os, yaml)))' \
 && addgroup -S -g 65532 image-mapper \
 && adduser -S -D -H -u 65532 -G image-mapper -h /nonexistent -s /sbin/nologin image-mapper

COPY lib/ /opt/image-mapper/lib/
COPY bin/ /opt/image-mapper/bin/
# Only the three hooks: shell-operator runs every executable file under /hooks.
COPY hooks/sync.py hooks/mutate.py hooks/validate.py /hooks/

# The root filesystem is read-only at run time, so the bytecode must be made
# now; otherwise every admission would compile the library again.
# `image-mapper` is the CLI (python3 -m imagemapper), for kubectl exec.
RUN python3 -m compileall -q /opt/image-mapper/lib \
 && PYTHONPATH=/opt/image-mapper/lib python3 -m imagemapper.bundle \
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

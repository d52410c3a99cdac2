#!/usr/bin/python3 -S
"""Test-only mutating hook with a fixed answer (tests/e2e/latency.py).

The floor of any Python hook run by shell-operator: the same interpreter and flags as
hooks/mutate.py, no imports, the binding context left unread, "allowed" written to the
response file. latency.py runs it next to image-mapper's hooks in the same shell-operator,
so the two see the same settings and the same load.
"""
import posix
import sys

CONFIG = ('{"configVersion":"v1","kubernetesMutating":[{"name":"fixed.e2e.imagemapper.io",'
          '"namespace":{"labelSelector":{"matchLabels":{"latency.e2e.imagemapper.io/webhook":"fixed"}}},'
          '"rules":[{"apiGroups":[""],"apiVersions":["v1"],"operations":["CREATE"],"resources":["pods"],'
          '"scope":"Namespaced"}],"failurePolicy":"Fail","sideEffects":"None","timeoutSeconds":10}]}')

if sys.argv[1:] == ["--config"]:
    sys.stdout.write(CONFIG + "\n")
else:
    fd = posix.open(posix.environ[b"ADMISSION_RESPONSE_PATH"], posix.O_WRONLY | posix.O_CREAT, 0o644)
    posix.write(fd, b'{"allowed":true}\n')
    posix.close(fd)

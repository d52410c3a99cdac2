#!/usr/bin/python3 -S
"""Test-only mutating hooks with a fixed answer (tests/e2e/latency.py).

The floor of any Python hook run by shell-operator: the same interpreter and flags as
hooks/mutate.py, no imports but the built-in ``posix``. latency.py installs this file
twice, and the name it runs under picks the answer:

* ``fixed.py``: reads the whole binding context (as any hook must) and writes the very
  answer mutate.py gives the latency Pod: the same JSON Patch (two images replaced, the
  original-images annotation added), so shell-operator decodes and logs, and the API
  server applies and stores, exactly what they do for mutate.py. It ends as mutate.py
  does, without the interpreter's teardown (``posix._exit``, see protocol.exit_now). What
  differs from mutate.py is then only what mutate.py does in its process, plus its
  rewrite log lines.
* ``fixed-allow.py``: reads nothing, writes ``{"allowed":true}`` and exits through the
  teardown (the hook measured by earlier versions of the bench).

latency.py runs them next to image-mapper's hooks in the same shell-operator, so they
see the same settings and the same load, and checks that the stored Pods match.
"""
import posix
import sys

ALLOW = sys.argv[0].endswith("fixed-allow.py")
NAME = "fixed-allow" if ALLOW else "fixed"
CONFIG = ('{"configVersion":"v1","kubernetesMutating":[{"name":"' + NAME + '.e2e.imagemapper.io",'
          '"namespace":{"labelSelector":{"matchLabels":{"latency.e2e.imagemapper.io/webhook":"' + NAME + '"}}},'
          '"rules":[{"apiGroups":[""],"apiVersions":["v1"],"operations":["CREATE"],"resources":["pods"],'
          '"scope":"Namespaced"}],"failurePolicy":"Fail","sideEffects":"None","timeoutSeconds":10}]}')
# base64 of mutate.py's JSON Patch for latency.py's Pod under examples/imagemap.yaml
PATCH = (b"W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9zcGVjL2NvbnRhaW5lcnMvMC9pbWFnZSIsInZhbHVlIjoicmVn"
         b"aXN0cnkuY29ycC9odWIvbmdpbng6MS4yNSJ9LHsib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9zcGVjL2NvbnRh"
         b"aW5lcnMvMS9pbWFnZSIsInZhbHVlIjoicmVnaXN0cnkuY29ycC9xdWF5L2pldHN0YWNrL2NlcnQtbWFuYWdl"
         b"ci1jb250cm9sbGVyOnYxLjE0LjQifSx7Im9wIjoiYWRkIiwicGF0aCI6Ii9tZXRhZGF0YS9hbm5vdGF0aW9u"
         b"cyIsInZhbHVlIjp7ImltYWdlbWFwcGVyLmlvL29yaWdpbmFsLWltYWdlcyI6IntcImNvbnRhaW5lcnMvYzBc"
         b"IjpcIm5naW54OjEuMjVcIixcImNvbnRhaW5lcnMvYzFcIjpcInF1YXkuaW8vamV0c3RhY2svY2VydC1tYW5h"
         b"Z2VyLWNvbnRyb2xsZXI6djEuMTQuNFwifSJ9fV0=")

if sys.argv[1:] == ["--config"]:
    sys.stdout.write(CONFIG + "\n")
else:
    if not ALLOW:
        fd = posix.open(posix.environ[b"BINDING_CONTEXT_PATH"], posix.O_RDONLY)
        while posix.read(fd, 1 << 16):
            pass
        posix.close(fd)
    fd = posix.open(posix.environ[b"ADMISSION_RESPONSE_PATH"], posix.O_WRONLY | posix.O_CREAT, 0o644)
    posix.write(fd, b'{"allowed":true}\n' if ALLOW else b'{"allowed":true,"patch":"' + PATCH + b'"}\n')
    posix.close(fd)
    if not ALLOW:
        posix._exit(0)

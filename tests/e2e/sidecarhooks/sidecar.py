#!/usr/bin/env python3
"""Test-only mutating hook: injects a sidecar with a public image, as a service mesh would.

Its webhook configuration is named so that it sorts after image-mapper's, so the API
server calls it after ours; image-mapper must be reinvoked (reinvocationPolicy
IfNeeded) to relocate the sidecar. It knows nothing of image-mapper on purpose.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hookkit import mutating_config, serve

NAME = "sidecar.e2e.imagemapper.io"
NAMESPACE_LABEL = "sidecar.e2e.imagemapper.io/inject"
SIDECAR = {"name": "injected-sidecar", "image": "busybox:1.36"}


def patch_for(pod: dict) -> list[dict]:
    """Append the sidecar unless a container of that name is there already."""
    names = {c.get("name") for c in pod.get("spec", {}).get("containers") or []}
    if SIDECAR["name"] in names:
        return []
    return [{"op": "add", "path": "/spec/containers/-", "value": SIDECAR}]


if __name__ == "__main__":
    serve(mutating_config(NAME, NAMESPACE_LABEL), patch_for)

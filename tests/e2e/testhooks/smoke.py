#!/usr/bin/env python3
"""Test-only mutating hook: labels Pods, to prove apiserver -> shell-operator -> hook works.

It knows nothing of image-mapper on purpose: if the e2e smoke test fails, the
environment is broken, not the product.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hookkit import mutating_config, serve

NAME = "smoke.e2e.imagemapper.io"
NAMESPACE_LABEL = "smoke.e2e.imagemapper.io/enabled"
POD_LABEL = "smoke.e2e.imagemapper.io/mutated"


def patch_for(pod: dict) -> list[dict]:
    """JSON Patch adding POD_LABEL; `/` in the label key is escaped as `~1`."""
    if not pod.get("metadata", {}).get("labels"):
        return [{"op": "add", "path": "/metadata/labels", "value": {POD_LABEL: "true"}}]
    key = POD_LABEL.replace("~", "~0").replace("/", "~1")
    return [{"op": "add", "path": f"/metadata/labels/{key}", "value": "true"}]


if __name__ == "__main__":
    serve(mutating_config(NAME, NAMESPACE_LABEL), patch_for)

#!/usr/bin/env python3
"""Test-only mutating hook: labels Pods, to prove apiserver -> shell-operator -> hook works.

It knows nothing of image-mapper on purpose: if the e2e smoke test fails, the
environment is broken, not the product.
"""

import base64
import json
import os
import sys

NAME = "smoke.e2e.imagemapper.io"
NAMESPACE_LABEL = "smoke.e2e.imagemapper.io/enabled"
POD_LABEL = "smoke.e2e.imagemapper.io/mutated"

CONFIG = {
    "configVersion": "v1",
    "kubernetesMutating": [
        {
            "name": NAME,
            "namespace": {"labelSelector": {"matchLabels": {NAMESPACE_LABEL: "true"}}},
            "rules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["pods"],
                    "scope": "Namespaced",
                }
            ],
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
        }
    ],
}


def patch_for(pod: dict) -> list[dict]:
    """JSON Patch adding POD_LABEL; `/` in the label key is escaped as `~1`."""
    if not pod.get("metadata", {}).get("labels"):
        return [{"op": "add", "path": "/metadata/labels", "value": {POD_LABEL: "true"}}]
    key = POD_LABEL.replace("~", "~0").replace("/", "~1")
    return [{"op": "add", "path": f"/metadata/labels/{key}", "value": "true"}]


def main() -> None:
    if sys.argv[1:] == ["--config"]:
        print(json.dumps(CONFIG))
        return
    with open(os.environ["BINDING_CONTEXT_PATH"]) as f:
        context = json.load(f)[0]
    pod = context["review"]["request"]["object"]
    patch = base64.b64encode(json.dumps(patch_for(pod)).encode()).decode()
    with open(os.environ["ADMISSION_RESPONSE_PATH"], "w") as f:
        json.dump({"allowed": True, "patch": patch}, f)


if __name__ == "__main__":
    main()

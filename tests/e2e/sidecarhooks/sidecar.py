#!/usr/bin/env python3
"""Test-only mutating hook: injects a sidecar with a public image, as a service mesh would.

Its webhook configuration is named so that it sorts after image-mapper's, so the API
server calls it after ours; image-mapper must be reinvoked (reinvocationPolicy
IfNeeded) to relocate the sidecar. It knows nothing of image-mapper on purpose.
"""

import base64
import json
import os
import sys

NAME = "sidecar.e2e.imagemapper.io"
NAMESPACE_LABEL = "sidecar.e2e.imagemapper.io/inject"
SIDECAR = {"name": "injected-sidecar", "image": "busybox:1.36"}

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
            "sideEffects": "None",
            "timeoutSeconds": 10,
        }
    ],
}


def patch_for(pod: dict) -> list[dict]:
    """Append the sidecar unless a container of that name is there already."""
    names = {c.get("name") for c in pod.get("spec", {}).get("containers") or []}
    if SIDECAR["name"] in names:
        return []
    return [{"op": "add", "path": "/spec/containers/-", "value": SIDECAR}]


def main() -> None:
    if sys.argv[1:] == ["--config"]:
        print(json.dumps(CONFIG))
        return
    with open(os.environ["BINDING_CONTEXT_PATH"]) as f:
        context = json.load(f)[0]
    response: dict = {"allowed": True}
    ops = patch_for(context["review"]["request"]["object"])
    if ops:
        response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    with open(os.environ["ADMISSION_RESPONSE_PATH"], "w") as f:
        json.dump(response, f)


if __name__ == "__main__":
    main()

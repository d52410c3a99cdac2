"""The shared skeleton of the test-only mutating hooks (testhooks/, sidecarhooks/).

Those hooks know nothing of image-mapper on purpose. They only prove the environment
(smoke) or play another product's webhook (sidecar). This module is standard library
only, and the hooks import it from their parent directory.
"""

import base64
import json
import os
import sys


def mutating_config(name: str, namespace_label: str) -> dict:
    """A kubernetesMutating binding on Pod CREATE in namespaces labeled ``<label>=true``."""
    return {"configVersion": "v1", "kubernetesMutating": [{
        "name": name,
        "namespace": {"labelSelector": {"matchLabels": {namespace_label: "true"}}},
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                   "resources": ["pods"], "scope": "Namespaced"}],
        "failurePolicy": "Fail", "sideEffects": "None", "timeoutSeconds": 10}]}


def serve(config: dict, patch_for) -> None:
    """``--config`` prints ``config``; a run answers with ``patch_for(pod)`` (may be [])."""
    if sys.argv[1:] == ["--config"]:
        print(json.dumps(config))
        return
    with open(os.environ["BINDING_CONTEXT_PATH"]) as f:
        context = json.load(f)[0]
    response: dict = {"allowed": True}
    ops = patch_for(context["review"]["request"]["object"])
    if ops:
        response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    with open(os.environ["ADMISSION_RESPONSE_PATH"], "w") as f:
        json.dump(response, f)

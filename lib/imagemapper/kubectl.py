"""Read objects from the current kube context through kubectl (the CLI's only cluster access).

kubectl already knows the user's kubeconfig, contexts, exec credential plugins and
proxies; calling it keeps the CLI free of a Kubernetes client dependency.
"""

from __future__ import annotations

import json
import subprocess

# Every kind that holds a Pod spec, fully qualified so aggregated APIs cannot shadow them.
POD_KINDS = ("pods", "podtemplates", "replicationcontrollers", "deployments.apps",
             "replicasets.apps", "statefulsets.apps", "daemonsets.apps", "jobs.batch",
             "cronjobs.batch")
TIMEOUT = 120  # seconds for one kubectl call


class KubectlError(Exception):
    """kubectl is missing, failed, or printed something that is not a List."""


def get_all(kinds: tuple[str, ...] = POD_KINDS, kubectl: str = "kubectl", context: str | None = None,
            namespace: str | None = None) -> list[dict]:
    """Every object of ``kinds`` in one namespace, or in all namespaces when ``namespace`` is None."""
    argv = [kubectl, "get", ",".join(kinds), "-o", "json"]
    argv += ["-n", namespace] if namespace else ["--all-namespaces"]
    if context:
        argv += ["--context", context]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise KubectlError(f"{kubectl} not found; install kubectl or pass images with -f") from None
    except subprocess.TimeoutExpired:
        raise KubectlError(f"{' '.join(argv)} did not finish within {TIMEOUT}s") from None
    if done.returncode != 0:
        raise KubectlError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    try:
        items = json.loads(done.stdout).get("items")
    except (ValueError, AttributeError):
        items = None
    if not isinstance(items, list):
        raise KubectlError(f"{' '.join(argv)} did not print a List")
    return items

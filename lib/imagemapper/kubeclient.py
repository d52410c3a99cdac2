"""Read the live cluster through ``kubectl``: the user's own context, credentials and RBAC.

The CLI asks "what would the webhook do here?" of the cluster the user is pointed at.
Going through kubectl (not a client library) keeps the runtime dependencies at PyYAML
and jsonpatch, and honours every kubeconfig feature (exec plugins, OIDC, proxies) for
free. Each call is one ``kubectl get -o json`` with a time limit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

INSTALL = "install kubectl (https://kubernetes.io/docs/tasks/tools/) or set KUBECTL to its path"


class KubectlError(RuntimeError):
    """kubectl is missing, or refused or failed a request; the message says which."""


class NotFound(KubectlError):
    """The object or the resource type does not exist."""


class Kubectl:
    """One kube context, addressed through the kubectl binary."""

    def __init__(self, context: str | None = None, kubeconfig: str | None = None,
                 binary: str | None = None, timeout: float = 30.0):
        self.binary = binary or os.environ.get("KUBECTL") or shutil.which("kubectl")
        self.context = context
        self.kubeconfig = kubeconfig
        self.timeout = timeout

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        if not self.binary:
            raise KubectlError("kubectl not found: " + INSTALL)
        argv = [self.binary]
        if self.kubeconfig:
            argv += ["--kubeconfig", self.kubeconfig]
        if self.context:
            argv += ["--context", self.context]
        return argv + list(args)

    def run(self, *args: str) -> str:
        """stdout of one kubectl command; KubectlError (NotFound) with kubectl's own words."""
        argv = self._argv(args)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise KubectlError(f"`kubectl {' '.join(args)}` took over {self.timeout:g} s") from None
        except OSError as exc:
            raise KubectlError(f"cannot run {self.binary}: {exc.strerror or exc}; " + INSTALL) from None
        if proc.returncode != 0:
            message = proc.stderr.strip() or f"exit status {proc.returncode}"
            if "NotFound" in message or "doesn't have a resource type" in message:
                raise NotFound(message)
            raise KubectlError(message)
        return proc.stdout

    def get_json(self, *args: str) -> dict:
        out = self.run("get", *args, "-o", "json")
        try:
            doc = json.loads(out)
        except ValueError:
            raise KubectlError(f"`kubectl get {' '.join(args)}` did not print JSON") from None
        return doc if isinstance(doc, dict) else {}

    def list(self, resource: str, namespace: str | None = None, selector: str | None = None) -> list[dict]:
        """The items of one resource type in ``namespace`` (all namespaces when None)."""
        args = [resource] + (["-n", namespace] if namespace else ["--all-namespaces"])
        if selector:
            args += ["-l", selector]
        items = self.get_json(*args).get("items")
        return [i for i in items or [] if isinstance(i, dict)]

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict:
        """One object; NotFound when it does not exist."""
        return self.get_json(resource, name, *(["-n", namespace] if namespace else []))

    def current_namespace(self) -> str:
        """The namespace of the current context, as ``kubectl -n`` defaults to it."""
        out = self.run("config", "view", "--minify", "-o", "jsonpath={..namespace}")
        return out.strip() or "default"

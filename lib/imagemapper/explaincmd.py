"""``image-mapper explain``: why an image is (not) rewritten, asked of the live cluster.

It reads, through kubectl and the current kube context, what the hooks read: the
ImageMaps and map-file ConfigMaps of the namespace, the cluster-wide map files, the
namespace's labels, and the selectors of the registered mutating webhook. It then
applies the hooks' own logic, and for each image prints what it becomes and why:
the rule that decided, "no rule matches", or the scope rule that keeps the webhook away.
As a kubectl plugin: ``kubectl image-mapper explain``.
"""

from __future__ import annotations

import argparse
import sys

from imagemapper import compiler, hookconfig, kubeclient, mapfile, podpatch, rules
from imagemapper.imagemap import MapInput
from imagemapper.scope import Scope
from imagemapper.settings import MAP_FILE_LABEL, Settings, SettingsError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from imagemapper.shapes import ClusterDoc, NamespaceDoc

DEPLOYMENT_SELECTOR = "app.kubernetes.io/name=image-mapper"
SETTINGS_ENV = ("IMAGE_MAPPER_NAMESPACE_MODE", "IMAGE_MAPPER_MAP_NAMESPACE",
                "IMAGE_MAPPER_EXCLUDE_NAMESPACES", "VALIDATING_WEBHOOK_CONFIGURATION_NAME")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    from imagemapper.cli import DEFAULT_OPERATOR_NAMESPACE

    ex = sub.add_parser("explain", help="explain against the live cluster (through kubectl) why "
                        "images are or are not rewritten",
                        description=" ".join(__doc__.split("\n\n")[:2]).replace("``", ""))
    ex.add_argument("-n", "--namespace",
                    help="the namespace to explain for (default: the kube context's namespace)")
    ex.add_argument("--context", help="the kube context to use (default: the current one)")
    ex.add_argument("--kubeconfig", metavar="FILE", help="the kubeconfig file to use")
    ex.add_argument("--operator-namespace", default=DEFAULT_OPERATOR_NAMESPACE, metavar="NS",
                    help=f"where image-mapper runs (default: {DEFAULT_OPERATOR_NAMESPACE})")
    ex.add_argument("targets", nargs="+", metavar="IMAGE|pod/NAME",
                    help="an image reference as a Pod in the namespace would use it, or "
                         "pod/NAME for every image of an existing Pod (its original images)")
    return ex


class Live:
    """What the hooks would see for one namespace of the live cluster."""

    def __init__(self, kc: kubeclient.Kubectl, namespace: str, operator_namespace: str):
        self.kc = kc
        self.namespace = namespace
        self.notes: list[str] = []
        self.settings = self._settings(operator_namespace)
        self.scope = self._scope()
        self.namespace_labels = self._namespace_labels()
        self.ns_doc, self.cluster_doc = self._rules()

    def _settings(self, operator_namespace: str) -> Settings:
        """The settings of the running Deployment (its env), else the defaults."""
        from imagemapper import settings as settings_mod

        # The bundle's configuration name, unless the Deployment says otherwise.
        env = {"SHELL_OPERATOR_NAMESPACE": operator_namespace,
               "VALIDATING_WEBHOOK_CONFIGURATION_NAME": "image-mapper"}
        try:
            deployments = self.kc.list("deployments.apps", operator_namespace, DEPLOYMENT_SELECTOR)
        except kubeclient.KubectlError as exc:
            self.notes.append(f"could not read the image-mapper Deployment ({_first_line(exc)}); "
                              "assuming the default settings")
            deployments = []
        for dep in deployments[:1]:
            for container in ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get(
                    "containers") or []:
                for var in container.get("env") or []:
                    if var.get("name") in SETTINGS_ENV and isinstance(var.get("value"), str):
                        env[var["name"]] = var["value"]
        try:
            return settings_mod.from_env(env)
        except SettingsError as exc:
            self.notes.append(f"the Deployment has a bad setting ({exc}); assuming the defaults")
            return Settings(operator_namespace=operator_namespace, configuration_name="image-mapper")

    def _scope(self) -> Scope:
        """The selectors of the webhook as registered (the truth), else as generated."""
        name = self.settings.webhook_configuration
        try:
            config = self.kc.get("mutatingwebhookconfigurations", name)
        except kubeclient.KubectlError as exc:
            self.notes.append(f"MutatingWebhookConfiguration {name} not readable "
                              f"({_first_line(exc)}): if image-mapper is not running, no Pod is "
                              "rewritten at all; showing what its rules would do")
            return Scope.from_settings(self.settings)
        for hook in config.get("webhooks") or []:
            if hook.get("name") == hookconfig.MUTATE_WEBHOOK:
                return Scope.from_webhook(hook)
        self.notes.append(f"MutatingWebhookConfiguration {name} has no webhook "
                          f"{hookconfig.MUTATE_WEBHOOK}; no Pod is rewritten")
        return Scope.from_settings(self.settings)

    def _namespace_labels(self) -> dict | None:
        try:
            obj = self.kc.get("namespaces", self.namespace)
        except kubeclient.KubectlError as exc:
            self.notes.append(f"namespace {self.namespace} not readable ({_first_line(exc)})")
            return None
        labels = (obj.get("metadata") or {}).get("labels")
        return labels if isinstance(labels, dict) else {}

    def _rules(self) -> tuple[NamespaceDoc | None, ClusterDoc | None]:
        selector = f"{MAP_FILE_LABEL}=true"
        map_ns = self.settings.map_namespace
        maps = [MapInput.from_object(o) for o in self._list("imagemaps.imagemapper.io", None)]
        ns_cms = [mapfile.MapFileInput.from_object(o) for o in self._list("configmaps", selector)]
        cluster_cms = ns_cms if map_ns == self.namespace else [
            mapfile.MapFileInput.from_object(o) for o in self._list("configmaps", selector, map_ns)]
        groups, _ = compiler.group_by_namespace(maps, ns_cms, map_ns)
        own_maps, own_cms = groups.get(self.namespace, ([], []))
        ns_doc = compiler.compile_namespace(self.namespace, own_maps, own_cms)[0]
        cluster_doc = compiler.compile_cluster(cluster_cms)[0]
        return ns_doc, cluster_doc

    def _list(self, resource: str, selector: str | None, namespace: str | None = None) -> list[dict]:
        try:
            return self.kc.list(resource, namespace or self.namespace, selector)
        except kubeclient.KubectlError as exc:
            self.notes.append(f"could not list {resource} in {namespace or self.namespace} "
                              f"({_first_line(exc)}); explaining without them")
            return []

    def decide(self, image: str) -> rules.Decision:
        return rules.decide(image, self.ns_doc, self.cluster_doc)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or ["?"])[0]


def _explain_image(live: Live, image: str, skipped: str | None) -> str:
    if skipped:
        return f"{image} (unchanged)\t# not rewritten: {skipped}"
    decision = live.decide(image)
    if decision.error:
        return f"{image} (unchanged)\t# not a valid image reference: {decision.error}"
    if decision.changed:
        return f"{image} -> {decision.new}\t# {decision.rule}"
    return f"{image} (unchanged)\t# {decision.rule}"


def _explain_pod(live: Live, name: str) -> list[str]:
    pod = live.kc.get("pods", name, live.namespace)
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    skipped = live.scope.skipped(live.namespace, live.namespace_labels, labels)
    originals = podpatch._recorded((meta.get("annotations") or {}).get(podpatch.ANNOTATION))
    out = [f"pod {live.namespace}/{name}:"]
    for field in podpatch.image_fields(pod.get("spec")):
        if not isinstance(field.image, str):
            continue
        original = originals.get(field.key, field.image)
        line = _explain_image(live, original, skipped)
        out.append(f"  {field.key}: {line}")
        expected = original if skipped else (live.decide(original).new or original)
        if field.image != expected:
            out.append(f"  {field.key}: note: the Pod runs {field.image}, not {expected}: it was "
                       "admitted before the current rules, or while the webhook was unavailable")
    return out


def run(args: argparse.Namespace) -> int:
    from imagemapper.cli import UsageError

    kc = kubeclient.Kubectl(context=args.context, kubeconfig=args.kubeconfig)
    try:
        namespace = args.namespace or kc.current_namespace()
        live = Live(kc, namespace, args.operator_namespace)
        lines: list[str] = []
        image_skip = live.scope.skipped(namespace, live.namespace_labels, None)
        for target in args.targets:
            if target.startswith(("pod/", "pods/")):
                lines += _explain_pod(live, target.partition("/")[2])
            else:
                lines.append(_explain_image(live, target, image_skip))
    except kubeclient.KubectlError as exc:
        raise UsageError(f"kubectl: {_first_line(exc)}") from None
    for note in live.notes:
        print(f"note: {note}", file=sys.stderr)
    print("\n".join(lines))
    return 0

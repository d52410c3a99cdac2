#!/usr/bin/env python3
"""`make demo`: image-mapper on a real one-node cluster, relocating an application.

1. builds the runtime image from the Dockerfile (`make image`, stand-in base),
2. brings up the one-node cluster of realcluster.py (kubelet, containerd, a private
   registry; every other registry unreachable) and pushes the image (`make push`),
3. installs the bundle with `kubectl apply -k tests/e2e/overlay` (only the image changed),
4. copies the sample application's images into the private registry (tiny stand-ins
   built here), applies the sample rules (tests/e2e/demo-rules.yaml: an ImageMap and a
   cluster map file) and then examples/deployment.yaml unchanged,
5. prints each container Running with its image before -> after and where it was pulled
   from, then tears everything down.

    python3 tests/e2e/realdemo.py           # run and tear down
    KEEP=1 python3 tests/e2e/realdemo.py    # leave the cluster running
    python3 tests/e2e/realdemo.py --stop    # take a kept cluster down (make demo-down)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import images
import realinstall
import yaml
from cluster import cache_dir, wait_until
from install import ORIGINALS
from realcluster import RealCluster, down

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "examples" / "deployment.yaml"
RULES = REPO / "tests" / "e2e" / "demo-rules.yaml"
STATE = cache_dir() / "demo-cluster"  # holds the work dir of a kept demo cluster
# The sample application's images as an operator mirrored them into the private
# registry (stand-ins: busybox; the init container's one exits, the others run).
MIRRORED = {
    "127.0.0.1:5000/mirror/docker.io/busybox:1.36": ["/bin/sh", "-c", "echo init done"],
    "127.0.0.1:5000/mirror/hub/library/nginx:1.25": images.APP_COMMAND,
    "127.0.0.1:5000/mirror/quay/prometheus/node-exporter:v1.8.0": images.APP_COMMAND,
}
T0 = time.monotonic()


def say(text: str = "") -> None:
    print(f"[demo {time.monotonic() - T0:5.1f}s] {text}" if text else "", flush=True)


def mirror_images(cluster: RealCluster) -> None:
    for ref, command in MIRRORED.items():
        name = ref.split("/", 1)[1].replace("/", "-").replace(":", "-")
        local = images.busybox_image(f"localhost/image-mapper-demo/{name}:1", command,
                                     f"demo stand-in for {ref}")
        images.push(cluster, local, ref)
    say(f"copied the sample application's images into the private registry ({len(MIRRORED)})")


def run(cluster: RealCluster) -> None:
    realinstall.push_image(cluster, say)
    realinstall.install(cluster, say)
    # The probe ImageMap that proved the webhook answers is not part of the demo.
    cluster.kubectl("delete", "namespace", realinstall.PROBE_NS, "--wait=false")
    mirror_images(cluster)
    app = yaml.safe_load(APP.read_text())
    namespace = app["metadata"]["namespace"]
    cluster.create_namespace(namespace)
    cluster.kubectl("apply", "-f", str(RULES))
    wait_until(lambda: (cluster.kubectl_json("get", "imagemap", "demo-mirror", "-n", namespace)
                        .get("status", {}).get("rules")), 30, "ImageMap demo-mirror Ready")
    say(f"applied {RULES.relative_to(REPO)} (ImageMap {namespace}/demo-mirror, "
        "cluster map file image-mapper-system/demo-mirror)")
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": namespace},
             "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
    wait_until(lambda: cluster.create(probe, dry_run=True)["spec"]["containers"][0]["image"]
               != "busybox:1.36", 30, "the cluster map file to take effect")
    cluster.kubectl("apply", "-f", str(APP))
    say(f"applied {APP.relative_to(REPO)} unchanged")
    pod = wait_running(cluster, namespace, app["spec"]["selector"]["matchLabels"])
    report(cluster, pod)


def wait_running(cluster: RealCluster, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    selector = ",".join(f"{k}={v}" for k, v in labels.items())

    def running() -> dict[str, Any] | None:
        pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", selector).get("items", [])
        ok = [p for p in pods if p["status"].get("phase") == "Running"
              and all(s.get("ready") for s in p["status"].get("containerStatuses", []))]
        return ok[0] if ok else None

    pod = wait_until(running, 120, f"the Pod of {APP.name} to run", interval=1)
    say(f"Pod {namespace}/{pod['metadata']['name']} Running")
    return pod


def report(cluster: RealCluster, pod: dict[str, Any]) -> None:
    import json

    originals = json.loads(pod["metadata"].get("annotations", {}).get(ORIGINALS, "{}"))
    statuses = {s["name"]: s for s in (pod["status"].get("initContainerStatuses") or [])
                + pod["status"]["containerStatuses"]}
    print()
    print(f"Pod {pod['metadata']['namespace']}/{pod['metadata']['name']} "
          f"(from {APP.relative_to(REPO)}), on node {pod['spec']['nodeName']}:")
    for kind in ("initContainers", "containers"):
        for c in pod["spec"].get(kind) or []:
            s = statuses[c["name"]]
            state = next(iter(s.get("state", {})), "?")
            reason = s["state"][state].get("reason", "") if state != "running" else ""
            before = originals.get(f"{kind}/{c['name']}", c["image"])
            print(f"  {kind}/{c['name']}: {state}{' (' + reason + ')' if reason else ''}")
            print(f"    image     {before} -> {c['image']}")
            print(f"    pulled    {s.get('imageID', '')}")
    print()
    print("$ kubectl get imagemaps -A")
    print(cluster.kubectl("get", "imagemaps", "-A").stdout.rstrip())
    print(f"$ kubectl -n {realinstall.OPERATOR_NS} get pods")
    print(cluster.kubectl("get", "pods", "-n", realinstall.OPERATOR_NS).stdout.rstrip())
    print()


def stop() -> int:
    if not STATE.exists():
        print("no demo cluster is running")
        return 0
    workdir = STATE.read_text().strip()
    code = down(workdir) if Path(workdir).exists() else 0
    STATE.unlink(missing_ok=True)
    return code


def main(argv: list[str]) -> int:
    if argv[1:] == ["--stop"]:
        return stop()
    keep = os.environ.get("KEEP") == "1"
    if STATE.exists():
        say("a kept demo cluster is still running; taking it down first")
        stop()
    say("building the image from the Dockerfile (first run: a minute for the stand-in base)")
    realinstall.build_image(say)
    say("starting the one-node cluster (etcd, kube-apiserver, controller-manager, scheduler, "
        "containerd, kubelet, kube-proxy, registry)")
    cluster = RealCluster(keep=keep)
    cluster.start()
    say(f"cluster up: node Ready, work dir {cluster.workdir}")
    if keep:
        STATE.write_text(str(cluster.workdir))
    try:
        run(cluster)
    finally:
        if keep:
            print("The cluster keeps running (KEEP=1):\n" + cluster.usage().replace(
                f"python3 tests/e2e/realcluster.py down {cluster.workdir}", "make demo-down"))
        else:
            cluster.stop()
            say("cluster stopped; nothing left running")
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

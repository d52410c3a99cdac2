"""End-to-end admission latency, measured on the e2e control plane (`make bench-long`).

`measure_latency()` brings up etcd + kube-apiserver, installs the bundle and one
shell-operator replica as install.py does, and creates Pods through the API (HTTPS with
the admin client certificate, one keep-alive connection per thread) in four namespaces:

* **ours**: mutated by image-mapper (an ImageMap rewrites two of the three images);
* **excluded**: the same rules, namespace labelled `imagemapper.io/mode=disabled`, so no
  webhook is called: the cost of a Pod create without admission webhooks;
* **baseline**: excluded from ours, handled by a plain in-process Python webhook
  (baseline_webhook.py `/allow`) that answers "allowed";
* **in-process**: excluded from ours, handled by the same server running image-mapper's
  own `admission.mutate` on our replica's snapshot (`/imagemapper`): our logic without
  shell-operator's process per request.

Each phase is N Pods at a given concurrency, all in one run on one control plane. The
webhook latency comes from kube-apiserver's own histogram
`apiserver_admission_webhook_admission_duration_seconds`, scraped before and after each
phase; quantiles are interpolated linearly inside its buckets, as Prometheus'
`histogram_quantile` does. The client-side create latency is exact (every request timed).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import platform
import re
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from cluster import ControlPlane, Process, missing_binaries, wait_until
from install import MODE_LABEL, REPO, Installation, imagemap, prerequisites


def _in_snapshot(state_dir: Path, namespace: str) -> bool:
    """Whether the replica's snapshot has rules for ``namespace`` yet."""
    if str(REPO / "lib") not in sys.path:
        sys.path.insert(0, str(REPO / "lib"))
    from imagemapper import snapshot

    try:
        return snapshot.load_namespace(str(state_dir), namespace) is not None
    except snapshot.SnapshotError:
        return False

PODS = 200
CONCURRENCY = (1, 10, 50)
WARMUP = 10
OURS = "pods.mutate.imagemapper.io"
BASELINE = "baseline.e2e.imagemapper.io"
INPROCESS = "inprocess.e2e.imagemapper.io"
BASELINE_NS = "image-mapper-e2e-latency"
BASELINE_SERVICE = "baseline-webhook"
BASELINE_ADDRESS = "127.0.0.2"
METRIC = "apiserver_admission_webhook_admission_duration_seconds"
# phase -> (namespace labels, webhook whose histogram describes it)
PHASES: dict[str, tuple[dict[str, str], str | None]] = {
    "ours": ({}, OURS),
    "excluded": ({MODE_LABEL: "disabled"}, None),
    "baseline": ({MODE_LABEL: "disabled", "latency.e2e.imagemapper.io/webhook": "baseline"}, BASELINE),
    "in-process": ({MODE_LABEL: "disabled", "latency.e2e.imagemapper.io/webhook": "inprocess"}, INPROCESS),
}
IMAGES = ("nginx:1.25", "quay.io/jetstack/cert-manager-controller:v1.14.4", "redis:7")


# ------------------------------------------------------------------ API client


class Api:
    """Direct HTTPS to kube-apiserver as admin, so that no kubectl process is timed."""

    def __init__(self, cp: ControlPlane) -> None:
        assert cp.pki is not None
        self.port = cp.api_port
        self.context = ssl.create_default_context(cafile=str(cp.ca_file))
        self.context.load_cert_chain(str(cp.pki.dir / "admin.crt"), str(cp.pki.dir / "admin.key"))

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=60)

    def get(self, path: str) -> str:
        conn = self.connection()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.read().decode()
        finally:
            conn.close()

    def create_pods(self, namespace: str, names: list[str], concurrency: int) -> tuple[list[float], float]:
        """Create the Pods with `concurrency` threads; (seconds per create, wall seconds)."""
        pending = iter(names)
        lock = threading.Lock()
        timings: list[float] = []
        errors: list[str] = []
        start = threading.Barrier(concurrency + 1)

        def worker() -> None:
            conn = self.connection()
            start.wait()
            try:
                while True:
                    with lock:
                        name = next(pending, None)
                    if name is None or errors:
                        return
                    body = json.dumps(pod_manifest(namespace, name))
                    began = time.perf_counter()
                    conn.request("POST", f"/api/v1/namespaces/{namespace}/pods", body,
                                 {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    data = response.read()
                    elapsed = time.perf_counter() - began
                    if response.status != 201:
                        errors.append(f"{response.status} {data[:300]!r}")
                        return
                    with lock:
                        timings.append(elapsed)
            finally:
                conn.close()

        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
        if errors:
            raise RuntimeError(f"Pod create failed in {namespace}: {errors[0]}")
        return timings, wall


def pod_manifest(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "latency"}},
        "spec": {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(IMAGES)]},
    }


# ------------------------------------------------------------------- histograms


def histogram(metrics: str, webhook: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of METRIC for `webhook`, CREATE, summed over labels."""
    buckets: dict[float, float] = {}
    prefix = METRIC + "_bucket{"
    for line in metrics.splitlines():
        if not line.startswith(prefix) or f'name="{webhook}"' not in line or 'operation="CREATE"' not in line:
            continue
        bound = re.search(r'le="([^"]+)"', line)
        if bound:
            le = float(bound.group(1))
            buckets[le] = buckets.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def difference(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """histogram_quantile: linear interpolation inside the bucket holding rank q*total."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = le, count
    return lower


def exact(samples: list[float], q: float) -> float:
    """Nearest-rank quantile of the client timings."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


# ------------------------------------------------------------------ environment


def start_baseline(cp: ControlPlane, state_dir: Path) -> Process:
    """baseline_webhook.py on 127.0.0.2:443 behind an ExternalName Service, registered for
    the namespaces labelled for it (one configuration, two webhooks: /allow, /imagemapper)."""
    assert cp.pki is not None and cp.workdir is not None
    fqdn = f"{BASELINE_SERVICE}.{BASELINE_NS}.svc"
    cert, key = cp.pki.issue("baseline", fqdn, dns=(fqdn,))
    cp.create_namespace(BASELINE_NS)
    cp.create_webhook_service(BASELINE_NS, BASELINE_SERVICE, BASELINE_ADDRESS)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO / "lib"),
           "IMAGE_MAPPER_STATE_DIR": str(state_dir)}
    process = Process.spawn(
        "baseline-webhook",
        [sys.executable, str(Path(__file__).resolve().parent / "baseline_webhook.py"),
         BASELINE_ADDRESS, "443", str(cert), str(key)],
        cp.workdir / "baseline-webhook.log", env)
    context = ssl.create_default_context(cafile=str(cp.ca_file))
    context.check_hostname = False

    def up() -> bool:
        process.check_alive()
        conn = http.client.HTTPSConnection(BASELINE_ADDRESS, 443, context=context, timeout=2)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    wait_until(up, 20, "the baseline webhook")
    ca_bundle = base64.b64encode(cp.ca_file.read_bytes()).decode()

    def webhook(name: str, path: str, label: str) -> dict[str, Any]:
        return {
            "name": name,
            "clientConfig": {"service": {"namespace": BASELINE_NS, "name": BASELINE_SERVICE, "path": path},
                             "caBundle": ca_bundle},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"latency.e2e.imagemapper.io/webhook": label}},
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
        }

    cp.apply({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
              "metadata": {"name": "e2e-latency-baseline"},
              "webhooks": [webhook(BASELINE, "/allow", "baseline"),
                           webhook(INPROCESS, "/imagemapper", "inprocess")]})
    return process


def machine() -> dict[str, Any]:
    versions = {}
    for name in ("kube-apiserver", "shell-operator"):
        stamp = Path.home() / ".cache" / "image-mapper-e2e" / "bin" / f".{name}.stamp"
        versions[name] = stamp.read_text().strip() if stamp.exists() else "?"
    return {"cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            **versions}


# ------------------------------------------------------------------ measurement


def measure_latency(pods: int = PODS, concurrency: tuple[int, ...] = CONCURRENCY) -> dict[str, Any]:
    """All phases in one run on one control plane; see the module docstring."""
    missing = missing_binaries()
    if missing:
        raise RuntimeError(f"e2e binaries {missing} are missing: run tests/e2e/build-binaries.sh")
    problems = prerequisites()
    if problems:
        raise RuntimeError("missing prerequisites: " + "; ".join(problems))
    started = time.monotonic()
    result: dict[str, Any] = {"pods": pods, "concurrency": list(concurrency), "machine": machine(),
                              "phases": []}
    with ControlPlane() as cp:
        installation = Installation(cp)
        installation.install()
        replica = installation.start()
        baseline = start_baseline(cp, replica.state_dir)
        try:
            api = Api(cp)
            rules = yaml.safe_load((REPO / "examples" / "imagemap.yaml").read_text())["spec"]["map"]
            for phase, (labels, _) in PHASES.items():
                namespace = f"latency-{phase}"
                cp.create_namespace(namespace, labels)
                cp.apply(imagemap("team-mirror", namespace, rules))
            wait_until(lambda: _in_snapshot(replica.state_dir, "latency-in-process"), 30,
                       "the latency namespaces in the snapshot")
            for phase in PHASES:  # warm-up: connections, first hook runs, caches
                check_phase(cp, phase, api.create_pods(f"latency-{phase}",
                                                       [f"warm-{i}" for i in range(WARMUP)], 1))
            for level in concurrency:
                for phase, (_, webhook) in PHASES.items():
                    result["phases"].append(run_phase(api, phase, webhook, pods, level))
        finally:
            baseline.stop()
        bounds = sorted(histogram(api.get("/metrics"), OURS))
        result["buckets"] = [b for b in bounds if b != float("inf")]
    result["wall_s"] = time.monotonic() - started
    result["ratios"] = ratios(result["phases"])
    return result


def check_phase(cp: ControlPlane, phase: str, outcome: tuple[list[float], float]) -> None:
    """The mutated phases really rewrite: one warm-up Pod as stored."""
    stored = cp.kubectl_json("get", "pod", "warm-0", "-n", f"latency-{phase}")
    image = stored["spec"]["containers"][0]["image"]
    rewritten = phase in ("ours", "in-process")
    if (image != IMAGES[0]) != rewritten:
        raise RuntimeError(f"phase {phase}: stored image {image} (rewrite expected: {rewritten})")


def run_phase(api: Api, phase: str, webhook: str | None, pods: int, level: int) -> dict[str, Any]:
    namespace = f"latency-{phase}"
    names = [f"c{level}-{i}" for i in range(pods)]
    before = api.get("/metrics")
    timings, wall = api.create_pods(namespace, names, level)
    after = api.get("/metrics")
    entry: dict[str, Any] = {
        "phase": phase, "concurrency": level, "webhook": webhook, "pods": len(timings),
        "wall_s": wall, "pods_per_s": len(timings) / wall,
        "client_p50_ms": exact(timings, 0.5) * 1e3, "client_p99_ms": exact(timings, 0.99) * 1e3,
    }
    if webhook:
        buckets = difference(histogram(after, webhook), histogram(before, webhook))
        entry["webhook_calls"] = buckets.get(float("inf"), 0.0)
        for q in (0.5, 0.99):
            value = quantile(buckets, q)
            entry[f"webhook_p{round(q * 100)}_ms"] = value * 1e3 if value is not None else None
    return entry


def ratios(phases: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Client create latency of each phase over the excluded one, per concurrency and quantile."""
    out: dict[str, dict[str, float]] = {}
    for level in {p["concurrency"] for p in phases}:
        rows = {p["phase"]: p for p in phases if p["concurrency"] == level}
        base = rows["excluded"]
        for phase in ("ours", "baseline", "in-process"):
            for q in ("p50", "p99"):
                out.setdefault(f"{phase}/excluded", {})[f"c{level} {q}"] = \
                    rows[phase][f"client_{q}_ms"] / base[f"client_{q}_ms"]
    return out


# ------------------------------------------------------------------------ report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def latency_table(result: dict[str, Any]) -> str:
    """The markdown section for docs/performance.md."""
    rows = [("| concurrency | namespace | webhook p50 ms | webhook p99 ms | create p50 ms | create p99 ms "
             "| create p50 / excluded | create p99 / excluded | Pods/s |"),
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in result["phases"]:
        base = next(p for p in result["phases"]
                    if p["concurrency"] == entry["concurrency"] and p["phase"] == "excluded")
        rows.append(
            f"| {entry['concurrency']} | {entry['phase']} | {_ms(entry.get('webhook_p50_ms'))} "
            f"| {_ms(entry.get('webhook_p99_ms'))} | {entry['client_p50_ms']:.1f} "
            f"| {entry['client_p99_ms']:.1f} | {entry['client_p50_ms'] / base['client_p50_ms']:.2f}x "
            f"| {entry['client_p99_ms'] / base['client_p99_ms']:.2f}x | {entry['pods_per_s']:.0f} |")
    machine_info = result["machine"]
    buckets = ", ".join(f"{b * 1e3:g}" for b in result.get("buckets", []))
    ours = {p["concurrency"]: p for p in result["phases"] if p["phase"] == "ours"}
    inproc = {p["concurrency"]: p for p in result["phases"] if p["phase"] == "in-process"}
    low = min(ours)
    spawn = ours[low]["client_p50_ms"] - inproc[low]["client_p50_ms"]
    return f"""## End to end (kube-apiserver + shell-operator + hooks)

One run, one control plane: etcd and kube-apiserver ({machine_info['kube-apiserver']}),
shell-operator ({machine_info['shell-operator']}) running `hooks/` as the bundle's
Deployment does, {machine_info['cores']} cores shared by all of them and by the client.
{result['pods']} Pods (three containers, two of them rewritten where a webhook mutates)
per phase, created over HTTPS at concurrency {", ".join(map(str, result['concurrency']))}
after {WARMUP} warm-up Pods per namespace; {result['wall_s']:.0f} s in all. Reproduce with
`make bench-long` (`tests/e2e/latency.py`).

* **webhook** columns: kube-apiserver's own histogram
  `{METRIC}` for the namespace's webhook (ours is `{OURS}`),
  differenced before and after the phase. Its buckets are coarse ({buckets} ms), so the
  quantiles are linear interpolations inside a bucket, as `histogram_quantile` does:
  read them as "which bucket", and the client columns for precision. A quantile that
  falls in a wide bucket (100-500 ms) can come out above the client's own figure.
* **create** columns: the client's exact time for `POST /api/v1/namespaces/NS/pods`
  (nearest rank), each over the same figure in the **excluded** namespace (same rules,
  labelled `imagemapper.io/mode=disabled`, so no webhook runs) at the same concurrency.
* **baseline**: a plain in-process Python webhook (`tests/e2e/baseline_webhook.py`,
  `http.server` + `ssl`, a thread per connection) that answers allowed.
  **in-process**: the same server running image-mapper's own `admission.mutate` on the
  replica's snapshot, i.e. our logic without a process per request.

{chr(10).join(rows)}

**What the process-per-request model costs.** shell-operator answers each AdmissionReview
by writing the binding context to a temporary file, starting the hook as a new process
(`python3 -S`, which imports the hot-path modules and reads two snapshot files), and
reading the response file back. At concurrency {low} that costs about {spawn:.0f} ms per Pod
over the same logic served in-process (create p50 {ours[low]['client_p50_ms']:.1f} ms against
{inproc[low]['client_p50_ms']:.1f} ms). Under load the hook processes compete for the same
cores as kube-apiserver and etcd: admission throughput levels off at about
{max(p['pods_per_s'] for p in ours.values()):.0f} Pods/s here, against
{max(p['pods_per_s'] for p in inproc.values()):.0f} Pods/s in-process, and the queueing
shows in the p99 columns. Removing it
takes a long-lived process that serves admission itself: either a small webhook server
in the image next to shell-operator (the in-process row is exactly that, with
shell-operator kept for the sync hook, TLS material and registration), or a
shell-operator feature for persistent hook processes, which v1.20 does not have. A Go
hook (deckhouse module-sdk) would also remove the interpreter start, at the price of
rewriting the hooks.
"""


if __name__ == "__main__":
    figures = measure_latency()
    print(json.dumps(figures, indent=1, default=str))
    print(latency_table(figures))

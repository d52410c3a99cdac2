"""End-to-end admission latency, measured on the e2e control plane (`make bench-long`).

`measure_latency()` brings up etcd + kube-apiserver, installs the bundle and one
shell-operator replica as install.py does, and creates Pods through the API (HTTPS with
the admin client certificate, one keep-alive connection per thread) in four namespaces:

* **ours**: mutated by image-mapper (an ImageMap rewrites two of the three images);
* **fixed**: a Python hook in the same shell-operator that reads its binding context and
  writes the same answer as ours (latencyhooks/fixed.py); **fixed-allow**, at the top
  concurrency only: the same hook answering "allowed" without reading anything;
* **excluded**: the same rules, namespace labelled `imagemapper.io/mode=disabled`, so no
  webhook is called: the cost of a Pod create without admission webhooks;
* **baseline**: excluded from ours, handled by a plain in-process Python webhook
  (baseline_webhook.py `/allow`) that answers "allowed";
* **in-process**: excluded from ours, handled by the same server running image-mapper's
  own `admission.mutate` on our replica's snapshot (`/imagemapper`): our logic without
  shell-operator's process per request.

Each phase is N Pods at a given concurrency, all in one run on one control plane, and the
whole run is bounded (:data:`DEADLINE_S`, a fixed Pod count per phase). The
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
import shutil
import ssl
import subprocess
import sys
import tempfile
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
DEADLINE_S = 1200  # the whole measurement; a phase that would start later fails the run
OURS = "pods.mutate.imagemapper.io"
FIXED = "fixed.e2e.imagemapper.io"
FIXED_ALLOW = "fixed-allow.e2e.imagemapper.io"
BASELINE = "baseline.e2e.imagemapper.io"
INPROCESS = "inprocess.e2e.imagemapper.io"
BASELINE_NS = "image-mapper-e2e-latency"
BASELINE_SERVICE = "baseline-webhook"
BASELINE_ADDRESS = "127.0.0.2"
METRIC = "apiserver_admission_webhook_admission_duration_seconds"
# phase -> (namespace labels, webhook whose histogram describes it)
PHASES: dict[str, tuple[dict[str, str], str | None]] = {
    "ours": ({}, OURS),
    "fixed": ({MODE_LABEL: "disabled", "latency.e2e.imagemapper.io/webhook": "fixed"}, FIXED),
    "fixed-allow": ({MODE_LABEL: "disabled", "latency.e2e.imagemapper.io/webhook": "fixed-allow"}, FIXED_ALLOW),
    "excluded": ({MODE_LABEL: "disabled"}, None),
    "baseline": ({MODE_LABEL: "disabled", "latency.e2e.imagemapper.io/webhook": "baseline"}, BASELINE),
    "in-process": ({MODE_LABEL: "disabled", "latency.e2e.imagemapper.io/webhook": "inprocess"}, INPROCESS),
}
TOP_ONLY = ("fixed-allow",)  # phases run at the top concurrency only
IMAGES = ("nginx:1.25", "quay.io/jetstack/cert-manager-controller:v1.14.4", "redis:7")
# kube-apiserver reuses a pooled connection to the webhook that shell-operator closed after
# its 10 s IdleTimeout, and does not retry the POST: the create fails with this, now and then.
STALE_CONNECTION = ("write: broken pipe", "connection reset by peer", "http: server closed idle connection")


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

    def create_pods(self, namespace: str, names: list[str], concurrency: int,
                    stale: list[str] | None = None) -> tuple[list[float], float]:
        """Create the Pods with `concurrency` threads; (seconds per create, wall seconds).

        A create refused because kube-apiserver wrote to a webhook connection that
        shell-operator had closed (:data:`STALE_CONNECTION`) is counted in ``stale``, left
        out of the timings and retried (twice at most) under another name; any other
        failure stops the run.
        """
        pending = iter(names)
        lock = threading.Lock()
        timings: list[float] = []
        errors: list[str] = []
        stale = [] if stale is None else stale
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
                    for attempt in (name, f"{name}-retry1", f"{name}-retry2"):
                        status, data, elapsed = self._create(conn, namespace, attempt)
                        if status == 201 or status != 500 or not any(
                                m.encode() in data for m in STALE_CONNECTION):
                            break
                        with lock:
                            stale.append(attempt)
                    if status != 201:
                        errors.append(f"{status} {data[:1000]!r}")
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

    @staticmethod
    def _create(conn: http.client.HTTPSConnection, namespace: str, name: str) -> tuple[int, bytes, float]:
        body = json.dumps(pod_manifest(namespace, name))
        began = time.perf_counter()
        conn.request("POST", f"/api/v1/namespaces/{namespace}/pods", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return response.status, data, time.perf_counter() - began


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


# The settings table compares the shipped Deployment (deploy/base/deployment.yaml: the
# temp dir on a memory-backed emptyDir, here /dev/shm, tmpfs) with one change at a time.
SETTINGS_LEVEL = 50
SETTINGS_PHASES = ("ours", "fixed")
_MEMORY_DIRS: list[Path] = []
_DEADLINE = [float("inf")]


def settings_variants(shipped: dict[str, str]) -> dict[str, dict[str, str]]:
    """Name -> env overrides: the shipped settings first, then one change each."""
    level = shipped.get("LOG_LEVEL") or "info"
    proxy = shipped.get("LOG_PROXY_HOOK_JSON") or "false"
    return {
        f"shipped (temp dir on tmpfs, LOG_LEVEL={level}, LOG_PROXY_HOOK_JSON={proxy})": {},
        "temp dir on the node's disk": {"SHELL_OPERATOR_TMP_DIR": "disk"},
        f"LOG_LEVEL={'error' if level != 'error' else 'info'}": {"LOG_LEVEL": "error" if level != "error" else "info"},
        f"LOG_PROXY_HOOK_JSON={'false' if proxy == 'true' else 'true'}":
            {"LOG_PROXY_HOOK_JSON": "false" if proxy == "true" else "true"},
        "IMAGE_MAPPER_MAX_ADMISSIONS=64 (no waiting at concurrency 50)": {"IMAGE_MAPPER_MAX_ADMISSIONS": "64"},
    }


def hooks_dir(workdir: Path) -> Path:
    """Our three hooks and the fixed-answer hooks (fixed.py under two names), as copies."""
    target = workdir / "latency-hooks"
    target.mkdir(parents=True, exist_ok=True)
    fixed = Path(__file__).resolve().parent / "latencyhooks" / "fixed.py"
    copies = [(h, h.name) for h in (REPO / "hooks").glob("*.py")] + [(fixed, "fixed.py"), (fixed, "fixed-allow.py")]
    for source, name in copies:
        (target / name).write_bytes(source.read_bytes())
        (target / name).chmod(0o755)
    return target


def ensure_bundle() -> str:
    """Build the hot path's bundle as the image build does (with the hooks' interpreter),
    so the hooks run as shipped."""
    python = (REPO / "hooks" / "mutate.py").read_text().splitlines()[0][2:].split()[0]
    out = subprocess.run([python, "-m", "imagemapper.bundle"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO / "lib")), check=True)
    return out.stdout.strip()


def settings_env(workdir: Path, name: str, overrides: dict[str, str]) -> dict[str, str]:
    """The overrides of one settings variant; the temp dir is on tmpfs unless it says disk."""
    tmp = (workdir / f"tmp-{len(name)}") if overrides.get("SHELL_OPERATOR_TMP_DIR") == "disk" else \
        Path(tempfile.mkdtemp(prefix="im-latency-", dir="/dev/shm"))
    if tmp.parent != workdir:
        _MEMORY_DIRS.append(tmp)  # removed when the run ends
    tmp.mkdir(parents=True, exist_ok=True)
    return {**overrides, "SHELL_OPERATOR_TMP_DIR": str(tmp)}


def _stat_fields(pid: int) -> list[int]:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return [0, 0, 0, 0]
    return [int(x) for x in fields[11:15]]


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its reaped children (hook processes), from /proc."""
    return sum(_stat_fields(pid)) / os.sysconf("SC_CLK_TCK")


class SocketWatch:
    """The connections a webhook server accepts during a phase: the distinct sockets its
    process holds, sampled every ``interval`` s (a connection to a slow webhook lives at
    least one request). Each new one is a TLS handshake on both sides."""

    def __init__(self, pid: int | None, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.seen: set[str] = set()
        self.before: set[str] = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sockets(self) -> set[str]:
        directory = f"/proc/{self.pid}/fd"
        found = set()
        try:
            names = os.listdir(directory)
        except OSError:
            return found
        for name in names:
            try:
                target = os.readlink(f"{directory}/{name}")
            except OSError:
                continue
            if target.startswith("socket:"):
                found.add(target)
        return found

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            self.seen |= self._sockets()

    def __enter__(self) -> SocketWatch:
        if self.pid:
            self.before = self._sockets()
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.pid:
            self.thread.join()
            self.seen |= self._sockets()

    @property
    def new(self) -> int | None:
        return len(self.seen - self.before) if self.pid else None


def cpu_by_component(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds per component; shell-operator's reaped children are the hook processes."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        utime, stime, cutime, cstime = _stat_fields(pid)
        if name == "shell-operator":
            out["hooks"] = (cutime + cstime) / tick
            out["shell-operator"] = (utime + stime) / tick
        else:
            out[name] = (utime + stime + cutime + cstime) / tick
    return out


def measure_latency(pods: int = PODS, concurrency: tuple[int, ...] = CONCURRENCY,
                    settings: bool = True, deadline_s: float = DEADLINE_S) -> dict[str, Any]:
    """All phases in one run on one control plane; see the module docstring."""
    missing = missing_binaries()
    if missing:
        raise RuntimeError(f"e2e binaries {missing} are missing: run tests/e2e/build-binaries.sh")
    problems = prerequisites()
    if problems:
        raise RuntimeError("missing prerequisites: " + "; ".join(problems))
    started = time.monotonic()
    _DEADLINE[0] = started + deadline_s
    result: dict[str, Any] = {"pods": pods, "concurrency": list(concurrency), "machine": machine(),
                              "phases": [], "settings": [], "bundle": ensure_bundle(), "deadline_s": deadline_s}
    with ControlPlane() as cp:
        installation = Installation(cp)
        installation.install()
        hooks = hooks_dir(cp.workdir)
        shipped = installation.operator_env(cp.workdir / "probe" / "state")
        variants = settings_variants(shipped)
        first = next(iter(variants))
        replica = installation.start(settings_env(cp.workdir, first, variants[first]), hooks_dir=hooks)
        result["shipped_env"] = {k: replica.env.get(k, "") for k in
                                 ("LOG_LEVEL", "LOG_TYPE", "LOG_PROXY_HOOK_JSON", "IMAGE_MAPPER_MAX_ADMISSIONS")}
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
            pids = {"shell-operator": replica.operator.process.pid, "webhook server": baseline.pid,
                    **{p.name: p.pid for p in cp.processes if p.name in ("etcd", "kube-apiserver")}}
            for phase in PHASES:  # warm-up: connections, first hook runs, caches
                api.create_pods(f"latency-{phase}", [f"warm-{i}" for i in range(WARMUP)], 1)
            check_phases(cp)
            result["idle_cpu_ms_per_s"] = idle_cpu(pids)
            for level in concurrency:
                for phase in phase_order(level, max(concurrency)):
                    result["phases"].append(run_phase(api, phase, PHASES[phase][1], pods, level, pids,
                                                      prefix=f"r{len(result['phases'])}-"))
            if settings:
                result["settings"] = measure_settings(cp, installation, replica, hooks, api, pods, variants)
        finally:
            baseline.stop()
            for path in _MEMORY_DIRS:
                shutil.rmtree(path, ignore_errors=True)
            _MEMORY_DIRS.clear()
        bounds = sorted(histogram(api.get("/metrics"), OURS))
        result["buckets"] = [b for b in bounds if b != float("inf")]
    result["wall_s"] = time.monotonic() - started
    result["ratios"] = ratios(merged_phases(result))
    return result


GOAL_ROUNDS = 4  # runs of ours and of fixed at the goal's concurrencies


def phase_order(level: int, top: int) -> list[str]:
    """Every phase once; at the goal's concurrencies (10 and the top one) ours and fixed
    GOAL_ROUNDS times each, as ours, fixed, ..., fixed, ours, ours, fixed, fixed, ours:
    neighbouring runs see the same load, so drifting load on a shared machine hits both
    alike, and their runs are merged."""
    order = [p for p in PHASES if p not in TOP_ONLY or level == top]
    if level in (10, top):
        order += ["fixed", "ours"] + ["ours", "fixed", "fixed", "ours"] * ((GOAL_ROUNDS - 2) // 2)
    return order


def round_ratios(result: dict[str, Any], level: int) -> list[float]:
    """ours / fixed Pods/s of each round at ``level``: the k-th run of each, in run order."""
    runs = {name: [e["pods_per_s"] for e in result["phases"] if e["phase"] == name and e["concurrency"] == level]
            for name in ("ours", "fixed")}
    return [o / f for o, f in zip(runs["ours"], runs["fixed"])]


def idle_cpu(pids: dict[str, int], seconds: float = 5.0) -> dict[str, float]:
    """CPU per second of each component with no Pod being created (watches, leases, timers)."""
    before = cpu_by_component(pids)
    time.sleep(seconds)
    after = cpu_by_component(pids)
    return {name: (after[name] - before[name]) * 1e3 / seconds for name in after}


def measure_settings(cp: ControlPlane, installation: Installation, replica: Any, hooks: Path,
                     api: Api, pods: int, variants: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """ours and fixed at one concurrency under each shell-operator settings variant."""
    rows = []
    for index, (name, overrides) in enumerate(variants.items()):
        if index:  # the first variant is the replica already running
            replica.operator.stop()
            installation.replicas.remove(replica)
            replica = installation.start(settings_env(cp.workdir, name, overrides), hooks_dir=hooks)
            wait_until(lambda r=replica: _in_snapshot(r.state_dir, "latency-ours"), 30, "the snapshot")
            for phase in SETTINGS_PHASES:
                api.create_pods(f"latency-{phase}", [f"s{index}-warm-{i}" for i in range(WARMUP)], 1)
        pids = {"shell-operator": replica.operator.process.pid,
                **{p.name: p.pid for p in cp.processes if p.name in ("etcd", "kube-apiserver")}}
        row: dict[str, Any] = {"settings": name, "env": overrides}
        runs = {phase: [] for phase in SETTINGS_PHASES}
        for step, phase in enumerate((*SETTINGS_PHASES, *reversed(SETTINGS_PHASES))):
            runs[phase].append(run_phase(api, phase, PHASES[phase][1], pods, SETTINGS_LEVEL, pids,
                                         prefix=f"s{index}-{step}-", log=replica.operator.process.log_path))
        row.update({phase: merge(entries) for phase, entries in runs.items()})
        rows.append(row)
    return rows


def _stored(cp: ControlPlane, phase: str) -> tuple[list[str], str | None]:
    pod = cp.kubectl_json("get", "pod", "warm-0", "-n", f"latency-{phase}")
    return ([c["image"] for c in pod["spec"]["containers"]],
            (pod["metadata"].get("annotations") or {}).get("imagemapper.io/original-images"))


def check_phases(cp: ControlPlane) -> None:
    """The phases do what they say: ours and in-process rewrite, fixed stores exactly what
    ours stores (its answer is mutate.py's, fixed), the others store the Pod as sent."""
    stored = {phase: _stored(cp, phase) for phase in PHASES}
    for phase, (images, annotation) in stored.items():
        rewritten = phase in ("ours", "in-process", "fixed")
        if (images[0] != IMAGES[0]) != rewritten or (annotation is not None) != rewritten:
            raise RuntimeError(f"phase {phase}: stored images {images}, annotation {annotation} "
                               f"(rewrite expected: {rewritten})")
    if stored["fixed"] != stored["ours"]:
        raise RuntimeError(f"the fixed hook's answer {stored['fixed']} is no longer mutate.py's "
                           f"{stored['ours']}: update PATCH in tests/e2e/latencyhooks/fixed.py")


def run_phase(api: Api, phase: str, webhook: str | None, pods: int, level: int,
              pids: dict[str, int] | None = None, prefix: str = "", log: Path | None = None) -> dict[str, Any]:
    if time.monotonic() > _DEADLINE[0]:
        raise RuntimeError(f"the end-to-end run passed its {DEADLINE_S} s bound before phase {phase} "
                           f"at concurrency {level}")
    namespace = f"latency-{phase}"
    names = [f"{prefix}c{level}-{i}" for i in range(pods)]
    before = api.get("/metrics")
    log_before = log.stat().st_size if log else 0
    cpu_before = cpu_by_component(pids or {})
    stale: list[str] = []
    server = (pids or {}).get("webhook server" if phase in ("baseline", "in-process") else "shell-operator")
    with SocketWatch(server if webhook else None) as sockets:
        timings, wall = api.create_pods(namespace, names, level, stale)
    cpu_after = cpu_by_component(pids or {})
    cpu = {name: (cpu_after[name] - cpu_before[name]) * 1e3 / len(timings) for name in cpu_after}
    after = api.get("/metrics")
    entry: dict[str, Any] = {
        "phase": phase, "concurrency": level, "webhook": webhook, "pods": len(timings),
        "wall_s": wall, "pods_per_s": len(timings) / wall, "timings": timings, "stale_connections": len(stale),
        "client_p50_ms": exact(timings, 0.5) * 1e3, "client_p99_ms": exact(timings, 0.99) * 1e3,
        "cpu_ms_per_pod": cpu,
    }
    if sockets.new is not None:
        entry["connections_per_pod"] = sockets.new / len(timings)
    if log:
        entry["log_bytes_per_pod"] = (log.stat().st_size - log_before) / len(timings)
    if webhook:
        buckets = difference(histogram(after, webhook), histogram(before, webhook))
        entry["buckets"] = sorted(buckets.items())
        _webhook_quantiles(entry, buckets)
    return entry


def _webhook_quantiles(entry: dict[str, Any], buckets: dict[float, float]) -> None:
    entry["webhook_calls"] = buckets.get(float("inf"), 0.0)
    for q in (0.5, 0.99):
        value = quantile(buckets, q)
        entry[f"webhook_p{round(q * 100)}_ms"] = value * 1e3 if value is not None else None


def merge(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs of one phase at one concurrency as one: Pods and seconds summed, quantiles of
    all the samples, CPU per Pod weighted by Pods."""
    if len(entries) == 1:
        return entries[0]
    pods = sum(e["pods"] for e in entries)
    wall = sum(e["wall_s"] for e in entries)
    timings = [t for e in entries for t in e["timings"]]
    names = {n for e in entries for n in e["cpu_ms_per_pod"]}
    out = dict(entries[0], pods=pods, wall_s=wall, pods_per_s=pods / wall, timings=timings, runs=len(entries),
               stale_connections=sum(e.get("stale_connections", 0) for e in entries),
               client_p50_ms=exact(timings, 0.5) * 1e3, client_p99_ms=exact(timings, 0.99) * 1e3,
               cpu_ms_per_pod={n: sum(e["cpu_ms_per_pod"].get(n, 0.0) * e["pods"] for e in entries) / pods
                               for n in names},
               runs_pods_per_s=[e["pods_per_s"] for e in entries])
    if all("connections_per_pod" in e for e in entries):
        out["connections_per_pod"] = sum(e["connections_per_pod"] * e["pods"] for e in entries) / pods
    if all("log_bytes_per_pod" in e for e in entries):
        out["log_bytes_per_pod"] = sum(e["log_bytes_per_pod"] * e["pods"] for e in entries) / pods
    if entries[0].get("webhook"):
        buckets: dict[float, float] = {}
        for e in entries:
            for le, count in e.get("buckets", []):
                buckets[float(le)] = buckets.get(float(le), 0.0) + count
        out["buckets"] = sorted(buckets.items())
        _webhook_quantiles(out, buckets)
    return out


def merged_phases(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The phases of the run, repeated runs of one phase and concurrency merged, in run order."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for entry in result["phases"]:
        groups.setdefault((entry["phase"], entry["concurrency"]), []).append(entry)
    return [merge(entries) for entries in groups.values()]


def ratios(phases: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Client create latency of each phase over the excluded one, per concurrency and quantile."""
    out: dict[str, dict[str, float]] = {}
    for level in {p["concurrency"] for p in phases}:
        rows = {p["phase"]: p for p in phases if p["concurrency"] == level}
        base = rows["excluded"]
        for phase in rows:
            if phase == "excluded":
                continue
            for q in ("p50", "p99"):
                out.setdefault(f"{phase}/excluded", {})[f"c{level} {q}"] = \
                    rows[phase][f"client_{q}_ms"] / base[f"client_{q}_ms"]
    return out


# ------------------------------------------------------------------------ report

COMPONENTS = ("hooks", "shell-operator", "webhook server", "kube-apiserver", "etcd")
HPA = REPO / "deploy" / "components" / "hpa" / "hpa.yaml"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _cpu(entry: dict[str, Any], *names: str) -> float:
    cpu = entry.get("cpu_ms_per_pod", {})
    if "shell-operator + hooks" in cpu and "hooks" not in cpu:  # a result saved before the split
        cpu = dict(cpu, hooks=cpu["shell-operator + hooks"], **{"shell-operator": 0.0})
    return sum(cpu.get(n, 0.0) for n in names)


def _api(entry: dict[str, Any]) -> float:
    return _cpu(entry, "kube-apiserver", "etcd")


def _phase(phases: list[dict[str, Any]], phase: str, level: int) -> dict[str, Any] | None:
    return next((p for p in phases if p["phase"] == phase and p["concurrency"] == level), None)


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """Issue 12 goal 3: mutate.py against the fixed-answer Python hook, same run."""
    phases = merged_phases(result)
    top, mid = max(result["concurrency"]), 10 if 10 in result["concurrency"] else min(result["concurrency"])
    ours_top, fixed_top = _phase(phases, "ours", top), _phase(phases, "fixed", top)
    ours_mid, fixed_mid = _phase(phases, "ours", mid), _phase(phases, "fixed", mid)
    assert ours_top and fixed_top and ours_mid and fixed_mid
    return {"throughput": ours_top["pods_per_s"] / fixed_top["pods_per_s"],
            "p99": ours_mid["client_p99_ms"] / fixed_mid["client_p99_ms"], "top": top, "mid": mid,
            "rounds": round_ratios(result, top)}


def hpa_target_millicores() -> float | None:
    """The HPA component's averageValue target, in millicores (None if it has none)."""
    try:
        doc = yaml.safe_load(HPA.read_text())
        value = str(doc["spec"]["metrics"][0]["resource"]["target"]["averageValue"])
    except (OSError, KeyError, IndexError, TypeError):
        return None
    return float(value[:-1]) if value.endswith("m") else float(value) * 1000


def _main_table(phases: list[dict[str, Any]]) -> list[str]:
    rows = ["| concurrency | namespace | webhook p50 ms | webhook p99 ms | create p50 ms | create p99 ms "
            "| Pods/s | CPU ms/Pod: hook processes | shell-operator | webhook server | kube-apiserver + etcd "
            "| all | new webhook connections/Pod |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in phases:
        runs = f" ({entry['runs']} runs)" if entry.get("runs", 1) > 1 else ""
        rows.append(
            f"| {entry['concurrency']} | {entry['phase']}{runs} | {_ms(entry.get('webhook_p50_ms'))} "
            f"| {_ms(entry.get('webhook_p99_ms'))} | {entry['client_p50_ms']:.1f} "
            f"| {entry['client_p99_ms']:.1f} | {entry['pods_per_s']:.0f} | {_cpu(entry, 'hooks'):.1f} "
            f"| {_cpu(entry, 'shell-operator'):.1f} | {_cpu(entry, 'webhook server'):.1f} | {_api(entry):.1f} "
            f"| {_cpu(entry, *COMPONENTS):.1f} | {_conns(entry)} |")
    return rows


def _conns(entry: dict[str, Any]) -> str:
    value = entry.get("connections_per_pod")
    return "-" if value is None else f"{value:.2f}"


def _settings_table(result: dict[str, Any]) -> list[str]:
    rows = ["| shell-operator settings | mutate.py Pods/s | fixed Pods/s | mutate.py / fixed "
            "| CPU ms/Pod (mutate.py): hook processes | shell-operator | kube-apiserver + etcd "
            "| shell-operator log bytes/Pod (mutate.py / fixed) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result.get("settings", []):
        ours, fixed = row["ours"], row["fixed"]
        logs = (f"{ours['log_bytes_per_pod']:.0f} / {fixed['log_bytes_per_pod']:.0f}"
                if "log_bytes_per_pod" in ours else "-")
        rows.append(
            f"| {row['settings']} | {ours['pods_per_s']:.0f} | {fixed['pods_per_s']:.0f} "
            f"| {ours['pods_per_s'] / fixed['pods_per_s']:.0%} | {_cpu(ours, 'hooks'):.1f} "
            f"| {_cpu(ours, 'shell-operator'):.1f} | {_api(ours):.1f} | {logs} |")
    return rows


def _api_cost(result: dict[str, Any], phases: list[dict[str, Any]], top: int, mid: int) -> str:
    """Why kube-apiserver + etcd spend more per Pod behind a slow webhook, from the figures."""
    at = {p["phase"]: p for p in phases if p["concurrency"] == top}
    idle = result.get("idle_cpu_ms_per_s", {})
    idle_api = idle.get("kube-apiserver", 0.0) + idle.get("etcd", 0.0)

    def net(name: str) -> float:
        entry = at[name]
        return _api(entry) - idle_api * entry["wall_s"] / entry["pods"]

    def conns(name: str, level: int = top) -> str:
        entry = _phase(phases, name, level)
        return _conns(entry) if entry else "-"

    listing = ", ".join(f"{_api(at[n]):.1f} ms {label}" for n, label in (
        ("ours", "behind mutate.py"), ("fixed", "behind the fixed hook (same answer)"),
        ("fixed-allow", "behind the fixed hook answering allowed"),
        ("in-process", "behind the in-process server (same answer)"), ("baseline", "behind it answering allowed"),
        ("excluded", "with no webhook")) if n in at)
    return f"""kube-apiserver + etcd used {listing}, at concurrency {top}. With no Pod being created
they use {idle_api:.0f} ms of CPU per second (watches, leases, the hooks' status writes, scrapes);
spread over a phase, that idle cost weighs more per Pod in a phase that admits fewer Pods per
second. Without it: ours {net('ours'):.1f} ms, fixed {net('fixed'):.1f} ms, in-process
{net('in-process'):.1f} ms, no webhook {net('excluded'):.1f} ms. So:

* **the patch** (applying it, storing the annotation and the longer object) costs
  {net('in-process') - net('baseline'):.1f} ms: in-process with the patch against in-process "allowed";
* **the webhook being slow** costs the rest: ours and fixed send the API server the very same
  answer, so the {net('ours') - net('fixed'):.1f} ms between them, and the
  {net('fixed') - net('in-process'):.1f} ms between fixed and in-process, come with how long each
  request is held open. One part of it is measured: **new connections**. kube-apiserver's
  webhook client (client-go's transport) keeps at most 25 idle connections per webhook host,
  so with more calls in flight than that, an answered call's connection is closed and a later
  call dials a new one, a TLS handshake on both sides. Per Pod at concurrency {top}:
  {conns('ours')} new connections to shell-operator behind mutate.py, {conns('fixed')} behind the
  fixed hook, {conns('in-process')} to the in-process server; at concurrency {mid},
  {conns('ours', mid)} behind mutate.py (fewer than 25 calls in flight, so none need replacing).
  Another part is the cores being shared with a new process per Pod: measured apart (not in
  this run), two loops of `python3 -S -c pass` beside no-webhook creates at concurrency 50 raised
  kube-apiserver + etcd CPU per Pod by about 0.4 ms (1.6 to 2.2 ms without them, 2.1 to 2.4 ms
  with them). The API server sends no other requests per Pod (its `apiserver_request_total`
  grows by one `POST pods` per Pod in every phase).

What shrinks it is fewer calls in flight per webhook host: a webhook that answers sooner.
More replicas help only through that (they share one Service host name, so one pool of
connections); the number of rules does not change it."""


def _capacity(result: dict[str, Any], phases: list[dict[str, Any]], top: int) -> str:
    at = {p["phase"]: p for p in phases if p["concurrency"] == top}
    ours = at["ours"]
    per_pod = _cpu(ours, "hooks", "shell-operator")
    hook_only = _cpu(ours, "hooks")
    api = _api(ours)
    target = hpa_target_millicores()
    idle = result.get("idle_cpu_ms_per_s", {})
    idle_replica = idle.get("hooks", 0.0) + idle.get("shell-operator", 0.0)
    hpa = ""
    if target and per_pod:
        hpa = f"""
**The HPA's target** (`deploy/components/hpa`): `averageValue: {target:.0f}m` per replica. At
{per_pod:.1f} ms of CPU per Pod, {target:.0f}m is {target / per_pod:.0f} Pods/s per replica on average:
the autoscaler adds replicas above that rate, and a replica keeps the rest of its 1-CPU limit
({(1000 - target) / per_pod:.0f} Pods/s more) for the burst that comes before the new replica is Ready
(its first full sync, seconds). Admission cost does not depend on the number of rules, so CPU
is the one signal that follows admission load; the sync hook's CPU is idle time in comparison
(a replica uses {idle_replica:.0f} ms per second without admissions)."""
    return f"""**Capacity per core, shell-operator counted.** At concurrency {top}, the hook processes used
{hook_only:.1f} ms of CPU per Pod and shell-operator {_cpu(ours, 'shell-operator'):.1f} ms: {per_pod:.1f} ms in all,
so one core of a replica admits about **{1000 / per_pod if per_pod else 0:.0f} Pods/s** (counting the hook
processes only would say {1000 / hook_only if hook_only else 0:.0f}).

**How replicas scale it.** Each replica is its own shell-operator with its own snapshot, and
the Service spreads admissions over the Ready ones, so capacity grows with replicas:
N replicas with one core each admit about N x {1000 / per_pod if per_pod else 0:.0f} Pods/s (a model from the
figures: this machine's two cores run every replica, so more of them here would only share
the same CPU). Each replica
also costs a sync hook and a watch of the rule objects, and the control plane pays
{api:.1f} ms of kube-apiserver + etcd CPU per Pod admitted this way, so N replicas saturate a
control plane with C cores for Pod creation at about C x {1000 / api if api else 0:.0f} Pods/s, whatever N.
{hpa}"""


def goal_summaries(result: dict[str, Any]) -> dict[str, str]:
    """Goals 3 and 5 in one line each, for the goal list at the top of docs/performance.md."""
    phases = merged_phases(result)
    g = goals(result)
    at = {p["phase"]: p for p in phases if p["concurrency"] == g["top"]}
    per_pod = _cpu(at["ours"], "hooks", "shell-operator")
    return {
        "3": (f"mutate.py admits **{g['throughput']:.0%}** of the fixed-answer hook's Pods/s at concurrency "
              f"{g['top']} (goal >= 90%: {at['ours']['pods_per_s']:.0f} against {at['fixed']['pods_per_s']:.0f}), "
              f"create p99 at concurrency {g['mid']} **{g['p99']:.2f}x** the fixed hook's (goal <= 1.2x); "
              "same run, same shell-operator, same answer"),
        "5": (f"**{1000 / per_pod if per_pod else 0:.0f} Pods/s per core** with shell-operator counted "
              f"({per_pod:.1f} ms of CPU per Pod: hook processes {_cpu(at['ours'], 'hooks'):.1f}, shell-operator "
              f"{_cpu(at['ours'], 'shell-operator'):.1f}); kube-apiserver + etcd {_api(at['ours']):.1f} ms per Pod "
              f"behind mutate.py against {_api(at['fixed']):.1f} behind the fixed hook and "
              f"{_api(at['in-process']):.1f} in-process, same answer"),
    }


def latency_table(result: dict[str, Any]) -> str:
    """The markdown section for docs/performance.md."""
    phases = merged_phases(result)
    machine_info = result["machine"]
    buckets = ", ".join(f"{b * 1e3:g}" for b in result.get("buckets", []))
    g = goals(result)
    top, mid = g["top"], g["mid"]
    at = {p["phase"]: p for p in phases if p["concurrency"] == top}
    ours_top, fixed_top = at["ours"], at["fixed"]
    ours_mid, fixed_mid = _phase(phases, "ours", mid), _phase(phases, "fixed", mid)
    assert ours_mid and fixed_mid
    shipped = result.get("shipped_env", {})
    stale = sum(e.get("stale_connections", 0) for e in result["phases"])
    stale += sum(r[p].get("stale_connections", 0) for r in result.get("settings", []) for p in SETTINGS_PHASES)
    total_pods = sum(e["pods"] for e in result["phases"]) + sum(
        r[p]["pods"] for r in result.get("settings", []) for p in SETTINGS_PHASES)
    diff = {n: _cpu(ours_top, n) - _cpu(fixed_top, n) for n in ("hooks", "shell-operator")}
    diff["api"] = _api(ours_top) - _api(fixed_top)
    total_ours, total_fixed = _cpu(ours_top, *COMPONENTS), _cpu(fixed_top, *COMPONENTS)
    allow = at.get("fixed-allow")
    allow_text = (f" The same hook answering just \"allowed\" (no patch, nothing read) admits "
                  f"{allow['pods_per_s']:.0f} Pods/s; mutate.py is "
                  f"{ours_top['pods_per_s'] / allow['pods_per_s']:.0%} of it." if allow else "")
    note = f"\n> {result['note']}\n" if result.get("note") else ""
    bound = result.get("deadline_s", DEADLINE_S)
    ratio = g["throughput"]
    summaries = "".join(f"<!-- goal{n}: {text} -->\n" for n, text in goal_summaries(result).items())
    summaries += f"<!-- goal3-met: {'yes' if g['throughput'] >= 0.9 and g['p99'] <= 1.2 else 'no'} -->\n"
    return f"""{summaries}## End to end (kube-apiserver + shell-operator + hooks)

One run, one control plane: etcd and kube-apiserver ({machine_info['kube-apiserver']}),
shell-operator ({machine_info['shell-operator']}) running `hooks/` with the bundle's
Deployment settings (LOG_LEVEL `{shipped.get('LOG_LEVEL') or 'info'}`, LOG_PROXY_HOOK_JSON
`{shipped.get('LOG_PROXY_HOOK_JSON') or 'false'}`, its temp dir on tmpfs as the Deployment's
memory-backed emptyDir) and the hot path's bundle built as the image builds it,
{machine_info['cores']} cores shared by all of them, by the client and by other work on this machine.
{result['pods']} Pods (three containers, two of them rewritten where a webhook mutates) per run,
created over HTTPS at concurrency {", ".join(map(str, result['concurrency']))} after {WARMUP} warm-up Pods per
namespace; at concurrency {mid} and {top}, ours and fixed run {GOAL_ROUNDS} times each (ours, fixed,
..., fixed, ours, ours, fixed, fixed, ours) and their runs are merged. {result['wall_s']:.0f} s in all
(bounded at {bound:.0f} s).
Reproduce with `make bench-long` (`tests/e2e/latency.py`).
{note}
* **ours**: image-mapper's mutate hook. **fixed**: a Python hook in the same shell-operator
  (`tests/e2e/latencyhooks/fixed.py`, `python3 -S`, only the built-in `posix`) that reads its
  binding context, writes mutate.py's answer for this Pod as a constant (the same patch, so
  shell-operator and the API server do the same work for both; the run checks that both
  store the same Pod) and exits as mutate.py does, without the interpreter's teardown.
  **fixed-allow** (concurrency {top} only): that hook reading nothing, answering "allowed"
  and exiting through the teardown, as earlier versions of this page measured. **excluded**: no
  webhook at all. **baseline**: a plain in-process Python webhook
  (`tests/e2e/baseline_webhook.py`) that answers allowed; **in-process**: the same server
  running image-mapper's own `admission.mutate` on the replica's snapshot, i.e. our logic
  without a process per request.
* **webhook** columns: kube-apiserver's own histogram `{METRIC}` (buckets {buckets} ms,
  interpolated as `histogram_quantile` does; read them as "which bucket"). **create**
  columns: the client's exact time for `POST /api/v1/namespaces/NS/pods` (nearest rank).
* **new webhook connections/Pod**: the distinct sockets the webhook's server process
  (shell-operator, or the in-process server) held during the run, sampled every 50 ms,
  less those it held before: the connections kube-apiserver opened to it, per Pod.
* **CPU ms/Pod**: user + system time from `/proc/PID/stat` over the run, divided by its Pods.
  **hook processes** are shell-operator's reaped children (`cutime + cstime`: the admission
  hooks, and the sync hook's 10-second counters export, which is idle cost); **shell-operator**
  is its own time. The client's CPU is not in **all**.
* {stale} of {total_pods} creates in this run were refused with "write: broken pipe": kube-apiserver
  reused a pooled connection to the webhook that shell-operator had closed after its fixed 10 s
  `IdleTimeout`, and it does not retry such a POST. They are retried, counted here and
  left out of the timings. In a cluster this is an occasional Pod create refused (failure
  policy Fail) after a quiet spell of 10 s or more; a client retries it.

{chr(10).join(_main_table(phases))}

**Goal 3 (issue 12).** At concurrency {top}, mutate.py admits {ours_top['pods_per_s']:.0f} Pods/s against
{fixed_top['pods_per_s']:.0f} for the fixed-answer hook (same answer): **{ratio:.0%}** (goal >= 90%;
round by round {", ".join(f"{r:.0%}" for r in g["rounds"])}: on this shared machine one round says little).{allow_text}
Create p99 at concurrency {mid}: {ours_mid['client_p99_ms']:.0f} ms against {fixed_mid['client_p99_ms']:.0f} ms,
**{g['p99']:.2f}x** the fixed hook's (goal <= 1.2x).

Where the difference goes, per Pod at concurrency {top} (ours minus fixed): hook processes
{diff['hooks']:+.1f} ms, shell-operator {diff['shell-operator']:+.1f} ms (our rewrite log lines: it parses
each and logs it again), kube-apiserver + etcd {diff['api']:+.1f} ms (the same answer, held
open longer). On two cores shared by all of them the run is CPU-bound, so throughput follows
the CPU per Pod of everything: {total_ours:.1f} ms for ours against {total_fixed:.1f} ms for fixed, a ratio of
{total_fixed / total_ours if total_ours else 0:.0%}. The hook process is the difference: see "Goals missed" below.

{_capacity(result, phases, top)}

**What a slow webhook costs the API server.** {_api_cost(result, phases, top, mid)}

Settings, measured in the same run at concurrency {SETTINGS_LEVEL} (one replica restarted per
variant; ours and fixed twice each in every variant, as ours, fixed, fixed, ours, so compare
within a row):

{chr(10).join(_settings_table(result))}

What each setting does, and what it costs:
* **the temp dir on a memory-backed emptyDir** (shipped, `sizeLimit: 64Mi`): shell-operator
  writes and deletes five files per admission there (binding context, response, metrics,
  conversion response, object patches). On the node's disk that is kernel file work in
  shell-operator and the hooks; in memory it is none, and it counts against the memory limit
  (a few kB per admission in flight).
* **`LOG_LEVEL`**: `info` (shipped) logs shell-operator's five lines per admission and our
  rewrite lines (the log bytes column); `error` drops them, which saves shell-operator's
  CPU for parsing and writing them and the container runtime's for storing them, and loses
  the rewrite lines (docs/operations.md, Metrics and logs).
* **`LOG_PROXY_HOOK_JSON`**: either way shell-operator parses each JSON line a hook prints
  and logs its fields with a `hook_` prefix; `true` (shipped) first tries the whole output
  as one JSON document. The lines come out the same.
* **`IMAGE_MAPPER_MAX_ADMISSIONS`**: the replica's bound on admissions doing work at once (a
  security bound, docs/security.md). At concurrency 50, 8 slots make the other processes
  wait after their interpreter start, without CPU; 64 lets them all run.
"""

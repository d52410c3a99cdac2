"""A one-node Kubernetes cluster on this machine, with a private registry.

RealCluster extends cluster.ControlPlane (same PKI, etcd, kube-apiserver and kubectl
helpers) with kube-controller-manager, kube-scheduler, containerd + runc + CNI bridge,
a kubelet, kube-proxy, and a docker-registry (CNCF distribution) on 127.0.0.1:5000.

Network. Every process runs in a network namespace this module creates
(`image-mapper-<pid>-<n>`), via `nsenter --net` (not `ip netns exec`, which would
also give each process its own mount namespace, so that the kubelet's Secret and
token tmpfs mounts would be invisible to containerd). Inside: `lo` and a bridge
`imbr0` whose address NODE_IP is the node's InternalIP (a kubelet refuses a
loopback node IP, and `kubectl logs/exec` need a node address). Pods are attached
to that bridge by the CNI bridge plugin. The namespace has no route anywhere else, so
nothing a Pod or containerd does can leave the machine; on top of that, containerd's
registry host configuration sends every registry name except 127.0.0.1:5000 to a
closed loopback port, so an image that was not relocated fails at once with
ErrImagePull, as in an air-gapped cluster. Deleting the namespace removes the
bridge, every Pod's veth and every iptables rule (kube-proxy's are per namespace).

NetworkPolicy: kube-network-policies (SIG Network's reference enforcer; nftables rules
send the first packet of each connection to or from a Pod that a policy selects to an
NFQUEUE, and it answers accept or drop), built patched by build-binaries.sh (see
kube-network-policies.patch). Upstream, it lets through every packet a root-owned
socket on the node sends, so the kubelet's probes and the API server (root, on the
node's network here) are never filtered; Pod-to-Pod traffic and a non-root process
on the node are.

Services: kube-proxy (iptables mode). The API server's `kubernetes` Service points at
NODE_IP, so Pods reach the API server at 10.96.0.1:443 as in any cluster, and the API
server calls the webhook through the Service's ClusterIP (kube-proxy's OUTPUT rules).

Teardown is by PID and works from the state file `cluster.json` in the work dir
alone (`python3 tests/e2e/realcluster.py down DIR`): control-plane and node processes
by their recorded PIDs, container processes by the kubelet's own cgroup root
(`/image-mapper-<pid>-<n>` in every cgroup hierarchy), containerd shims by their
`-address` argument; then every mount under the work dir, the cgroups, the network
namespace and the kubelet's /var/log/containers links.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import images
from cluster import (
    BUILD_SCRIPT,
    SERVICE_CLUSTER_IP_RANGE,
    ControlPlane,
    E2EError,
    bin_dir,
    cache_dir,
    kubectl_binary,
    wait_until,
)

NODE_BINARIES = (
    "kubelet",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kube-network-policies",
)
NODE_NAME = "image-mapper-node"
BRIDGE = "imbr0"
NODE_IP = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
REGISTRY = "127.0.0.1:5000"
# Nothing listens here inside the namespace: connections are refused at once.
CLOSED_PORT = "127.0.0.1:9"
# Registry names containerd is told to send to CLOSED_PORT. `_default` covers every
# other name; the namespace has no route out for any name missed anyway.
PUBLIC_REGISTRIES = (
    "_default",
    "docker.io",
    "registry-1.docker.io",
    "index.docker.io",
    "quay.io",
    "registry.k8s.io",
    "k8s.gcr.io",
    "gcr.io",
    "ghcr.io",
    "mcr.microsoft.com",
    "public.ecr.aws",
    "registry.gitlab.com",
)
NETPOL_USER = "system:kube-network-policies"
NETPOL_TABLE = "kube-network-policies"
PAUSE_IMAGE = f"{REGISTRY}/image-mapper-e2e/pause:1"
CGROUP_HIERARCHIES = Path("/sys/fs/cgroup")
PACKAGES_SCRIPT = "tests/e2e/install-packages.sh"
# Debian packages this module runs, and the command each provides.
HOST_TOOLS = {
    "containerd": "containerd",
    "runc": "runc",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "buildah": "buildah",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "iptables": "iptables",
    "nft": "nftables",
    "conntrack": "conntrack",
    "busybox": "busybox-static",
}


def missing_prerequisites() -> list[str]:
    """What this machine lacks for a RealCluster, each with how to get it."""
    problems = []
    if os.geteuid() != 0:
        problems.append("root (network namespaces, cgroups, mounts)")
    for tool, package in HOST_TOOLS.items():
        if not shutil.which(tool):
            problems.append(f"{tool} (Debian package {package}; run {PACKAGES_SCRIPT})")
    if not Path("/usr/lib/cni/bridge").exists():
        problems.append(
            f"/usr/lib/cni/bridge (containernetworking-plugins; run {PACKAGES_SCRIPT})"
        )
    for name in ("etcd", "kube-apiserver", *NODE_BINARIES):
        if not os.access(bin_dir() / name, os.X_OK):
            problems.append(f"{bin_dir() / name} (run {BUILD_SCRIPT})")
    return problems


def _run(*argv: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    if check and result.returncode != 0:
        raise E2EError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


_CLONE_NEWNET = 0x40000000


def enter_netns(path: str) -> None:
    """Move the calling thread (only it: setns(2)) into the network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


def in_netns(path: str, fn: Callable[[], Any]) -> Any:
    """Call fn() in a thread that has joined the network namespace at `path`
    (setns(2) changes only the calling thread), so that Python sockets can reach
    the cluster's loopback and Pod addresses; returns fn's result or raises."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            enter_netns(path)
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="in-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _json(value: Any) -> str:
    return json.dumps(value, indent=2) + "\n"


@dataclass
class RealCluster(ControlPlane):
    """A one-node cluster. Use as a context manager, or start()/stop().

    keep=True: the processes do not die with this Python process (for `make demo
    KEEP=1`); stop them with `python3 tests/e2e/realcluster.py down <workdir>`.
    """

    keep: bool = False
    netns: str = ""
    node_processes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.netns:
            self.netns = f"image-mapper-{os.getpid()}-{int(time.time()) % 100000}"
        self.cgroup_root = f"/{self.netns}"
        self._die_with_parent = not self.keep
        self.keep_workdir = self.keep_workdir or self.keep
        self._started = time.time()

    # ---- where things are

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def state_file(self) -> Path:
        return self.workdir / "cluster.json"

    @property
    def registry(self) -> str:
        """host:port of the private registry, as Pods and containerd see it."""
        return REGISTRY

    def _wrap(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]

    def _http_get(self, url: str) -> str:
        def get() -> str:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()

        return in_netns(self.netns_path, get)

    def run_in_netns(
        self, *argv: str, check: bool = True, timeout: float = 600, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the cluster's network namespace (e.g. skopeo or
        `make push` against the registry at 127.0.0.1:5000)."""
        return _run(*self._wrap(list(argv)), check=check, timeout=timeout, **kw)

    def _apiserver_extra_ips(self) -> tuple[str, ...]:
        return (NODE_IP,)

    def apiserver_flags(self) -> list[str]:
        flags = [
            f
            for f in super().apiserver_flags()
            if not f.startswith(("--bind-address=", "--advertise-address="))
            and f != "--endpoint-reconciler-type=none"
        ]
        pki = self.pki.dir
        return [
            *flags,
            # 0.0.0.0 inside the namespace: its loopback and NODE_IP only.
            "--bind-address=0.0.0.0",
            f"--advertise-address={NODE_IP}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=false",
        ]

    # ---- lifecycle

    def start(self, timeout: float = 120) -> None:
        """Bring everything up; on failure take down what was started."""
        problems = missing_prerequisites()
        if problems:
            raise E2EError("cannot run the one-node cluster; missing: " + "; ".join(problems))
        try:
            self._make_netns()
            self._write_state()
            super().start(timeout)
            self._write_state()
            self._start_registry()
            images.push(self, images.pause_image(), PAUSE_IMAGE)
            self._start_controllers()
            self._start_containerd()
            self._start_kubelet()
            self._start_kube_proxy()
            self._start_network_policies()
            self._write_state()
            self._write_kubectl_wrapper()
            self.wait_node_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Take everything down by PID (see the module docstring)."""
        if self.workdir.exists() and Path(self.netns_path).exists():
            self._write_state()
        for process in self.processes:
            process.stopped = True
        self.processes.clear()
        if self.state_file.exists():
            teardown(json.loads(self.state_file.read_text()))
        if self._own_workdir and not self.keep_workdir and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _write_state(self) -> None:
        state = {
            "workdir": str(self.workdir),
            "netns": self.netns,
            "cgroup_root": self.cgroup_root,
            "pids": {p.name: p.pid for p in self.processes},
            "kubeconfig": str(self.admin_kubeconfig),
            "started": self._started,
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(_json(state))
        tmp.replace(self.state_file)

    # ---- network

    def _make_netns(self) -> None:
        _run("ip", "netns", "add", self.netns)
        ns = ("ip", "-n", self.netns)
        _run(*ns, "link", "set", "lo", "up")
        _run(*ns, "link", "add", BRIDGE, "type", "bridge")
        _run(*ns, "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        _run(*ns, "link", "set", BRIDGE, "up")
        # The namespace has no default route; without a route for the Service range,
        # connect() to a ClusterIP fails (ENETUNREACH) before kube-proxy's DNAT runs.
        _run(*ns, "route", "add", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE)
        # kube-proxy's DNAT of Pod -> ClusterIP traffic and the Pods' own routes.
        self.run_in_netns("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

    def _write_cni_config(self) -> Path:
        conf_dir = self.workdir / "cni" / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / "10-image-mapper.conflist").write_text(
            _json(
                {
                    "cniVersion": "1.0.0",
                    "name": "image-mapper-e2e",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "isDefaultGateway": True,
                            # No masquerading: nothing leaves the namespace.
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                                "dataDir": str(self.workdir / "cni" / "ipam"),
                            },
                        },
                        {"type": "loopback"},
                    ],
                }
            )
        )
        return conf_dir

    # ---- PKI

    def _make_pki(self) -> None:
        super()._make_pki()
        pki = self.pki
        pki.issue("kubelet", NODE_NAME, dns=(NODE_NAME,), ips=(NODE_IP,))
        pki.issue(
            "kubelet-client",
            f"system:node:{NODE_NAME}",
            organization="system:nodes",
            client=True,
        )
        pki.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            organization="system:masters",
            client=True,
        )
        pki.issue("controller-manager", "system:kube-controller-manager", client=True)
        pki.issue("scheduler", "system:kube-scheduler", client=True)
        pki.issue("kube-proxy", "system:kube-proxy", client=True)
        pki.issue("kube-network-policies", NETPOL_USER, client=True)

    def _client_kubeconfig(self, name: str) -> Path:
        return self._write_kubeconfig(
            self.workdir / f"{name}.kubeconfig",
            name,
            {
                "client-certificate": str(self.pki.dir / f"{name}.crt"),
                "client-key": str(self.pki.dir / f"{name}.key"),
            },
        )

    # ---- registry

    def _start_registry(self) -> None:
        storage = cache_dir() / "registry"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "registry.yml"
        config.write_text(
            _json(
                {
                    "version": 0.1,
                    "log": {"level": "warn", "accesslog": {"disabled": True}},
                    "storage": {
                        "filesystem": {"rootdirectory": str(storage)},
                        "delete": {"enabled": True},
                    },
                    "http": {"addr": REGISTRY, "secret": "image-mapper-e2e"},
                }
            )
        )
        registry = self._spawn("docker-registry", ["docker-registry", "serve", str(config)])

        def up() -> bool:
            registry.check_alive()
            return self._http_get(f"http://{REGISTRY}/v2/").strip() == "{}"

        wait_until(up, 30, f"docker-registry on {REGISTRY}")

    # ---- controllers

    def _start_controllers(self) -> None:
        pki = self.pki.dir
        cm = self._client_kubeconfig("controller-manager")
        self._spawn(
            "kube-controller-manager",
            [
                str(bin_dir() / "kube-controller-manager"),
                f"--kubeconfig={cm}",
                f"--authentication-kubeconfig={cm}",
                f"--authorization-kubeconfig={cm}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki / 'service-account.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # Finished Pods go away soon (CronJob runs in the tests).
                "--terminated-pod-gc-threshold=50",
                "--v=1",
            ],
        )
        sched = self._client_kubeconfig("scheduler")
        self._spawn(
            "kube-scheduler",
            [
                str(bin_dir() / "kube-scheduler"),
                f"--kubeconfig={sched}",
                f"--authentication-kubeconfig={sched}",
                f"--authorization-kubeconfig={sched}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--v=1",
            ],
        )

    # ---- node

    def _start_containerd(self) -> None:
        root = self.workdir / "containerd"
        hosts = root / "certs.d"
        for name in PUBLIC_REGISTRIES:
            (hosts / name).mkdir(parents=True, exist_ok=True)
            (hosts / name / "hosts.toml").write_text(
                f'server = "http://{CLOSED_PORT}"\n\n'
                f'[host."http://{CLOSED_PORT}"]\n  capabilities = ["pull", "resolve"]\n'
            )
        (hosts / REGISTRY).mkdir(parents=True, exist_ok=True)
        (hosts / REGISTRY / "hosts.toml").write_text(
            f'server = "http://{REGISTRY}"\n\n'
            f'[host."http://{REGISTRY}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        cni = self._write_cni_config()
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = root / "config.toml"
        config.write_text(
            f"""version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{root / 'containerd.sock'}"

[ttrpc]
  address = "{root / 'containerd.sock.ttrpc'}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / 'opt'}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine lacks CAP_SYS_RESOURCE: the kubelet's -998 for sandboxes cannot be
  # set (runc then fails with "can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{shutil.which('runc')}"
  Root = "{root / 'runc'}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni}"

[{cri}.registry]
  config_path = "{hosts}"
"""
        )
        containerd = self._spawn("containerd", ["containerd", f"--config={config}"])
        socket = root / "containerd.sock"
        wait_until(
            lambda: containerd.check_alive() or socket.exists(), 30, "containerd socket"
        )
        self.containerd_socket = socket

    def _start_kubelet(self) -> None:
        pki = self.pki.dir
        for hierarchy in self._cgroup_hierarchies():
            (hierarchy / self.cgroup_root.lstrip("/")).mkdir(exist_ok=True)
        resolv = self.workdir / "resolv.conf"
        resolv.write_text("")
        config = self.workdir / "kubelet-config.json"
        config.write_text(
            _json(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "address": NODE_IP,
                    "port": 10250,
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": 10248,
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": True},
                        "x509": {"clientCAFile": str(pki / "ca.crt")},
                    },
                    "authorization": {"mode": "Webhook"},
                    "tlsCertFile": str(pki / "kubelet.crt"),
                    "tlsPrivateKeyFile": str(pki / "kubelet.key"),
                    "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
                    "cgroupDriver": "cgroupfs",
                    "cgroupRoot": self.cgroup_root,
                    "failSwapOn": False,
                    "failCgroupV1": False,
                    "resolvConf": str(resolv),
                    "podLogsDir": str(self.workdir / "pod-logs"),
                    "serializeImagePulls": False,
                    "imageGCHighThresholdPercent": 100,
                    "evictionHard": {"memory.available": "100Mi"},
                    "nodeStatusUpdateFrequency": "4s",
                    "syncFrequency": "10s",
                    "fileCheckFrequency": "10s",
                    "maxPods": 60,
                }
            )
        )
        kubeconfig = self._client_kubeconfig("kubelet-client")
        self._spawn(
            "kubelet",
            [
                str(bin_dir() / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--cert-dir={self.workdir / 'kubelet-certs'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        config = self.workdir / "kube-proxy-config.json"
        config.write_text(
            _json(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "clientConnection": {
                        "kubeconfig": str(self._client_kubeconfig("kube-proxy"))
                    },
                    "hostnameOverride": NODE_NAME,
                    "mode": "iptables",
                    "clusterCIDR": POD_SUBNET,
                    "bindAddress": NODE_IP,
                    "healthzBindAddress": "127.0.0.1:10256",
                    "metricsBindAddress": "127.0.0.1:10249",
                    # Global sysctls it cannot and need not change here.
                    "conntrack": {
                        "maxPerCore": 0,
                        "tcpEstablishedTimeout": "0s",
                        "tcpCloseWaitTimeout": "0s",
                    },
                    "oomScoreAdj": 0,
                    "iptables": {"localhostNodePorts": False},
                }
            )
        )
        self._spawn("kube-proxy", [str(bin_dir() / "kube-proxy"), f"--config={config}"])

    def _start_network_policies(self) -> None:
        """The NetworkPolicy enforcer, with upstream's RBAC (list and watch Pods,
        Namespaces, NetworkPolicies) bound to its client certificate's user."""
        rules = [
            {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
             "verbs": ["list", "watch"]},
        ]
        self.apply([
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "kube-network-policies"}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "kube-network-policies"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "kube-network-policies"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                           "name": NETPOL_USER}]},
        ])
        enforcer = self._spawn(
            "kube-network-policies",
            [
                str(bin_dir() / "kube-network-policies"),
                f"--kubeconfig={self._client_kubeconfig('kube-network-policies')}",
                f"--hostname-override={NODE_NAME}",
                "--metrics-bind-address=127.0.0.1:9080",
                "--v=2",
            ],
        )

        def rules_installed() -> bool:
            enforcer.check_alive()
            listed = self.run_in_netns("nft", "list", "table", "inet", NETPOL_TABLE, check=False)
            return listed.returncode == 0 and "queue" in listed.stdout

        wait_until(rules_installed, 30, f"kube-network-policies' nftables table {NETPOL_TABLE}")

    @staticmethod
    def _cgroup_hierarchies() -> list[Path]:
        return _cgroup_hierarchies()

    def wait_node_ready(self, timeout: float = 120) -> None:
        def ready() -> bool:
            for process in self.processes:
                process.check_alive()
            node = self.kubectl_json("get", "node", NODE_NAME, check=False)
            return any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in node.get("status", {}).get("conditions", [])
            )

        wait_until(ready, timeout, f"node {NODE_NAME} Ready", interval=1)
        # The controller-manager makes `default` ServiceAccounts; wait for it.
        wait_until(
            lambda: self.kubectl(
                "get", "serviceaccount", "default", "-n", "kube-system", check=False
            ).returncode
            == 0,
            60,
            "the default ServiceAccount of kube-system",
        )

    def kubectl_json(self, *args: str, **kwargs: Any) -> Any:
        result = self.kubectl(*args, "-o", "json", **kwargs)
        return json.loads(result.stdout) if result.returncode == 0 else {}

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """Create a namespace and wait for its `default` ServiceAccount, which the
        controller-manager makes (Pods are refused until it exists)."""
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(labels or {})},
            }
        )
        wait_until(
            lambda: self.kubectl(
                "get", "serviceaccount", "default", "-n", name, check=False
            ).returncode
            == 0,
            30,
            f"ServiceAccount default in {name}",
        )

    def _write_kubectl_wrapper(self) -> None:
        """<workdir>/kubectl: kubectl for this cluster, usable from any shell."""
        wrapper = self.workdir / "kubectl"
        wrapper.write_text(
            "#!/bin/sh\n# kubectl on the image-mapper e2e cluster (runs in its network namespace)\n"
            f'exec nsenter --net={self.netns_path} -- {kubectl_binary()} '
            f'--kubeconfig={self.admin_kubeconfig} "$@"\n'
        )
        wrapper.chmod(0o755)

    def usage(self) -> str:
        """How to use this cluster from a shell (printed with KEEP=1)."""
        return (
            f"  kubectl:   {self.workdir / 'kubectl'} get pods -A\n"
            f"  or:        nsenter --net={self.netns_path} kubectl "
            f"--kubeconfig={self.admin_kubeconfig} get pods -A\n"
            f"  registry:  {REGISTRY} inside the namespace, e.g. nsenter --net={self.netns_path} "
            f"skopeo list-tags --tls-verify=false docker://{REGISTRY}/image-mapper/image-mapper\n"
            f"  logs:      {self.workdir}/*.log\n"
            f"  stop:      python3 tests/e2e/realcluster.py down {self.workdir}"
        )


# ----------------------------------------------------------------------- teardown


def _cgroup_hierarchies() -> list[Path]:
    """Mounted cgroup v1 hierarchies plus the v2 one (hybrid layout)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] in ("cgroup", "cgroup2"):
            found.append(Path(parts[1]))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop_pids(pids: list[int], grace: float) -> None:
    for pid in pids:
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            _kill(pid, signal.SIGKILL)


def _own(pid: int, marker: str) -> bool:
    """True if `pid` is still the process we started (guards against PID reuse)."""
    return marker in _cmdline(pid)


def _cgroup_dirs(root: str) -> Iterator[Path]:
    """Every cgroup directory of ours, deepest first (they vanish while we walk:
    os.walk ignores what it can no longer read)."""
    for hierarchy in _cgroup_hierarchies():
        top = hierarchy / root.lstrip("/")
        if top.is_dir():
            for directory, _, _ in os.walk(top, topdown=False):
                yield Path(directory)


def _cgroup_pids(root: str) -> set[int]:
    pids: set[int] = set()
    for directory in _cgroup_dirs(root):
        try:
            text = (directory / "cgroup.procs").read_text()
        except OSError:
            continue
        pids.update(int(p) for p in text.split())
    return pids


def _mounts_under(path: str) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == path or point.startswith(path.rstrip("/") + "/"):
            points.append(point)
    return sorted(set(points), key=len, reverse=True)


SHIM_SOCKETS = Path("/run/containerd/s")


def _remove_shim_sockets(since: float) -> None:
    """containerd 1.6 puts its shims' sockets in the fixed /run/containerd/s, whatever
    its state dir; a killed shim leaves its socket behind. Remove the ones made since
    our containerd started that nobody answers on any more (so never a live socket
    of another containerd)."""
    import socket as _socket

    entries = list(SHIM_SOCKETS.iterdir()) if SHIM_SOCKETS.is_dir() else []
    for entry in entries:
        try:
            if entry.stat().st_mtime < since - 1:
                continue
            probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                probe.connect(str(entry))
                continue  # alive: not ours to remove
            except OSError:
                entry.unlink(missing_ok=True)
            finally:
                probe.close()
        except OSError:
            pass
    for directory in (SHIM_SOCKETS, SHIM_SOCKETS.parent):
        try:
            directory.rmdir()  # only if empty: another containerd may use it
        except OSError:
            pass


def teardown(state: dict[str, Any]) -> list[str]:
    """Stop everything a RealCluster started, from its state file; returns what was
    left over (empty when clean)."""
    workdir, netns, root = state["workdir"], state["netns"], state["cgroup_root"]
    pids = {name: int(pid) for name, pid in state.get("pids", {}).items()}
    order = ["kube-network-policies", "kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager"]
    # 1. The node agents and controllers, so nothing restarts containers.
    _stop_pids([pids[n] for n in order if n in pids and _own(pids[n], workdir)], 10)
    # 2. Container processes (the kubelet's cgroups) and containerd's shims.
    for _ in range(50):
        victims = _cgroup_pids(root)
        victims.update(
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit()
            and "containerd-shim" in _cmdline(int(p.name))
            and workdir in _cmdline(int(p.name))
        )
        if not victims:
            break
        for pid in victims:
            _kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    # Shims killed this way leave their socket in containerd's fixed /run/containerd/s.
    _remove_shim_sockets(float(state.get("started", 0)))
    # 3. Everything else we started.
    rest = [pid for name, pid in pids.items() if name not in order and _own(pid, workdir)]
    _stop_pids(rest, 10)
    # 4. Mounts (kubelet volumes, containerd snapshots, Pod network namespaces).
    for point in _mounts_under(workdir):
        if _run("umount", point, check=False).returncode != 0:
            _run("umount", "-l", point, check=False)
    # 5. cgroups, deepest first (a cgroup with no process left can be removed).
    for _ in range(20):
        remaining = list(_cgroup_dirs(root))
        for directory in remaining:
            try:
                directory.rmdir()
            except OSError:
                pass
        if not list(_cgroup_dirs(root)):
            break
        time.sleep(0.2)
    # 6. The network namespace: its bridge, veths and iptables rules go with it.
    if Path(f"/run/netns/{netns}").exists():
        _run("ip", "netns", "delete", netns, check=False)
    # 7. The kubelet's links in /var/log/containers to our Pods' logs.
    links = Path("/var/log/containers")
    if links.is_dir():
        for link in links.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(workdir):
                link.unlink()
    return leftovers(state)


def leftovers(state: dict[str, Any]) -> list[str]:
    """Processes, mounts, cgroups or the namespace of this cluster still present."""
    workdir, netns, root = state["workdir"], state["netns"], state["cgroup_root"]
    found = [f"process {p.name}: {_cmdline(int(p.name))[:80]}"
             for p in Path("/proc").iterdir()
             if p.name.isdigit() and int(p.name) != os.getpid()
             and workdir in _cmdline(int(p.name)) and _alive(int(p.name))]
    found += [f"mount {m}" for m in _mounts_under(workdir)]
    found += [f"cgroup {d}" for d in _cgroup_dirs(root)]
    if Path(f"/run/netns/{netns}").exists():
        found.append(f"network namespace {netns}")
    return found


def down(workdir: str) -> int:
    """Command line: take down the cluster whose state is in WORKDIR/cluster.json."""
    state_file = Path(workdir) / "cluster.json"
    if not state_file.exists():
        print(f"no cluster state in {state_file}", file=sys.stderr)
        return 1
    left = teardown(json.loads(state_file.read_text()))
    if left:
        print("left over:\n  " + "\n  ".join(left), file=sys.stderr)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"cluster in {workdir} stopped; nothing left")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "down":
        sys.exit(down(sys.argv[2]))
    print("usage: realcluster.py down WORKDIR", file=sys.stderr)
    sys.exit(2)

"""pytest fixtures for end-to-end tests against a real kube-apiserver and shell-operator.

See tests/e2e/README.md. The binaries come from tests/e2e/build-binaries.sh; when they
are missing the tests fail (not skip), so that a CI run cannot pass by testing nothing.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import (
    BUILD_SCRIPT,
    ControlPlane,
    ShellOperator,
    bin_dir,
    missing_binaries,
)

_names = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end test with kube-apiserver and shell-operator "
        f"(binaries from {BUILD_SCRIPT})",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's report so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"e2e_report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "e2e_report_call", None)
    return report is None or report.failed


@pytest.fixture(scope="module")
def control_plane() -> Iterator[ControlPlane]:
    """One etcd + kube-apiserver per test module (startup takes seconds). Per module, not
    per session: without a controller-manager a module that uninstalls image-mapper
    leaves its namespace Terminating for good, and every module installs afresh.

    Tests share it, so each test works in its own namespaces (see make_namespace) and
    removes cluster-scoped objects it creates. IMAGE_MAPPER_E2E_KEEP=1 keeps the
    temporary directory (certificates, kubeconfigs, logs) for debugging.
    """
    missing = missing_binaries()
    if missing:
        pytest.fail(
            f"e2e binaries {', '.join(missing)} are missing from {bin_dir()}; "
            f"build them with {BUILD_SCRIPT} (the first build takes about 10 minutes)",
            pytrace=False,
        )
    keep = os.environ.get("IMAGE_MAPPER_E2E_KEEP") == "1"
    with ControlPlane(keep_workdir=keep) as cp:
        yield cp
    if keep:
        print(f"\ne2e control plane files kept in {cp.workdir}")


@pytest.fixture
def make_namespace(control_plane: ControlPlane) -> Callable[..., str]:
    """make_namespace(prefix="t", labels=None) -> name of a new, unique namespace
    with its default ServiceAccount. Namespaces are never deleted: without
    controller-manager, deletion would never finish."""

    def make(prefix: str = "t", labels: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{os.getpid()}-{next(_names)}"
        control_plane.create_namespace(name, labels)
        return name

    return make


@pytest.fixture
def shell_operator(
    control_plane: ControlPlane, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ShellOperator]]:
    """start(hooks_dir, env=None, kubeconfig=None, **kwargs) -> ShellOperator.

    Same arguments as ControlPlane.start_shell_operator. Every operator started by the
    test is stopped at its end and its webhook configurations are deleted; if the test
    failed, the tail of each operator log is printed.
    """
    started: list[ShellOperator] = []

    def start(
        hooks_dir: Path | str,
        env: dict[str, str] | None = None,
        kubeconfig: Path | None = None,
        **kwargs: Any,
    ) -> ShellOperator:
        operator = control_plane.start_shell_operator(
            hooks_dir, env, kubeconfig, **kwargs
        )
        started.append(operator)
        return operator

    yield start
    failed = _failed(request)
    for operator in started:
        operator.stop()
        if failed:
            print(
                f"\n--- {operator.process.name} log ({operator.process.log_path}), tail:"
            )
            print(operator.process.tail(60))


# ------------------------------------------------------------ the one-node cluster


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[Any]:
    """One RealCluster (realcluster.py) for the whole session: a kubelet, containerd,
    controllers, kube-proxy and a registry at `real_cluster.registry` (127.0.0.1:5000
    inside the cluster's network namespace). See tests/e2e/README.md.

    IMAGE_MAPPER_E2E_KEEP=1 leaves it running and prints how to use and stop it.
    """
    from realcluster import RealCluster, missing_prerequisites

    missing = missing_prerequisites()
    if missing:
        pytest.fail("the one-node cluster cannot start; missing: " + "; ".join(missing)
                    + " (make e2e-binaries installs and builds all of it)", pytrace=False)
    keep = os.environ.get("IMAGE_MAPPER_E2E_KEEP") == "1"
    cluster = RealCluster(keep=keep)
    cluster.start()
    try:
        yield cluster
    finally:
        if keep:
            print("\none-node cluster kept running:\n" + cluster.usage())
        else:
            cluster.stop()


@pytest.fixture(scope="session")
def installed(real_cluster: Any) -> Any:
    """image-mapper built with `make image` (stand-in base), pushed with `make push`
    into the cluster's registry and installed with `kubectl apply -k tests/e2e/overlay`.
    Returns the RealCluster."""
    import realinstall

    realinstall.build_image()
    realinstall.push_image(real_cluster)
    real_cluster.install_output = realinstall.install(real_cluster)
    return real_cluster

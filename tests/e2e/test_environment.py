"""Smoke tests of the e2e environment itself (no image-mapper code involved).

If these fail, the product e2e tests cannot be trusted either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster import ControlPlane, E2EError, ShellOperator, wait_until

pytestmark = pytest.mark.e2e

TESTHOOKS = Path(__file__).resolve().parent / "testhooks"

SMOKE_NS_LABEL = "smoke.e2e.imagemapper.io/enabled"
SMOKE_POD_LABEL = "smoke.e2e.imagemapper.io/mutated"


def pod(name: str, namespace: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "smoke"}},
        "spec": {"containers": [{"name": "main", "image": "registry.example/app:1"}]},
    }


def test_apiserver_version_and_default_serviceaccount(
    control_plane: ControlPlane,
) -> None:
    version = json.loads(control_plane.kubectl("get", "--raw=/version").stdout)
    assert version["gitVersion"].startswith("v1.34.")
    control_plane.kubectl("get", "serviceaccount", "default", "-n", "default")


def test_token_kubeconfig_authenticates_as_serviceaccount(
    control_plane: ControlPlane, make_namespace: Callable[..., str]
) -> None:
    ns = make_namespace("token")
    control_plane.create_service_account(ns, "reader")
    config = control_plane.token_kubeconfig(ns, "reader")

    denied = control_plane.kubectl(
        "get", "pods", "-n", ns, kubeconfig=config, check=False
    )
    # Authenticated as the ServiceAccount, then refused by RBAC.
    assert denied.returncode != 0
    assert f"system:serviceaccount:{ns}:reader" in denied.stderr

    control_plane.kubectl(
        "create", "role", "reader", "-n", ns, "--verb=list", "--resource=pods"
    )
    control_plane.kubectl(
        "create",
        "rolebinding",
        "reader",
        "-n",
        ns,
        "--role=reader",
        f"--serviceaccount={ns}:reader",
    )
    wait_until(
        lambda: (
            control_plane.kubectl(
                "get", "pods", "-n", ns, kubeconfig=config, check=False
            ).returncode
            == 0
        ),
        10,
        "RBAC to allow the ServiceAccount",
    )


def test_mutating_webhook_chain(
    control_plane: ControlPlane,
    make_namespace: Callable[..., str],
    shell_operator: Callable[..., ShellOperator],
) -> None:
    """apiserver -> ExternalName Service -> shell-operator -> hook -> patched stored Pod."""
    selected = make_namespace("smoke", {SMOKE_NS_LABEL: "true"})
    other = make_namespace("plain")
    operator = shell_operator(TESTHOOKS)
    operator.wait_ready(("mutating",))

    # The API server loads new webhook configurations asynchronously; a server-side
    # dry run goes through admission without storing anything.
    wait_until(
        lambda: (
            SMOKE_POD_LABEL
            in control_plane.create(pod("probe", selected), dry_run=True)["metadata"][
                "labels"
            ]
        ),
        30,
        "the mutating webhook to take effect",
    )

    stored = control_plane.create(pod("mutated", selected))
    assert stored["metadata"]["labels"] == {"app": "smoke", SMOKE_POD_LABEL: "true"}
    again = control_plane.kubectl_json("get", "pod", "mutated", "-n", selected)
    assert again["metadata"]["labels"][SMOKE_POD_LABEL] == "true"

    untouched = control_plane.create(pod("untouched", other))
    assert untouched["metadata"]["labels"] == {"app": "smoke"}

    assert "smoke.py" in operator.logs()
    assert "shell_operator_" in operator.metrics()


def test_webhook_is_routed_through_externalname_service(
    control_plane: ControlPlane,
    make_namespace: Callable[..., str],
    shell_operator: Callable[..., ShellOperator],
) -> None:
    """No Service, no webhook call. Also covers: an operator on another loopback address,
    and shell-operator running as a ServiceAccount with the RBAC its docs list for
    admission (list/create/update webhook configurations)."""
    selected = make_namespace("route", {SMOKE_NS_LABEL: "true"})
    operator_ns = make_namespace("operator")
    control_plane.create_service_account(operator_ns, "shell-operator")
    role = f"e2e-{operator_ns}"
    control_plane.kubectl(
        "create",
        "clusterrole",
        role,
        "--verb=list,create,update",
        "--resource=mutatingwebhookconfigurations.admissionregistration.k8s.io",
    )
    control_plane.kubectl(
        "create",
        "clusterrolebinding",
        role,
        f"--clusterrole={role}",
        f"--serviceaccount={operator_ns}:shell-operator",
    )
    try:
        operator = shell_operator(
            TESTHOOKS,
            kubeconfig=control_plane.token_kubeconfig(operator_ns, "shell-operator"),
            namespace=operator_ns,
            service_name="unrouted",
            create_service=False,
            listen_address="127.0.0.2",
        )
        operator.wait_ready(("mutating",))

        def refusal() -> str | None:
            result = control_plane.kubectl(
                "create",
                "-f",
                "-",
                "--dry-run=server",
                "-o",
                "name",
                input=json.dumps(pod("probe", selected)),
                check=False,
            )
            return result.stderr if result.returncode else None

        message = wait_until(refusal, 30, "the webhook to be called (and fail)")
        assert 'service "unrouted" not found' in message
        control_plane.create_webhook_service(operator_ns, "unrouted", "127.0.0.2")
        wait_until(
            lambda: (
                SMOKE_POD_LABEL
                in control_plane.create(pod("probe", selected), dry_run=True)[
                    "metadata"
                ]["labels"]
            ),
            30,
            "the webhook to be reached through the ExternalName Service",
        )
    finally:
        control_plane.kubectl(
            "delete", "clusterrolebinding,clusterrole", role, check=False
        )


def test_stopped_operator_leaves_no_webhook(
    control_plane: ControlPlane,
    make_namespace: Callable[..., str],
    shell_operator: Callable[..., ShellOperator],
) -> None:
    """stop() removes the configuration, so later tests are not blocked by failurePolicy Fail."""
    selected = make_namespace("smoke", {SMOKE_NS_LABEL: "true"})
    operator = shell_operator(TESTHOOKS)
    operator.wait_ready(("mutating",))
    operator.stop()
    assert not operator.alive()
    with pytest.raises(E2EError):
        control_plane.kubectl(
            "get", "mutatingwebhookconfiguration", operator.webhook_configuration
        )
    wait_until(
        lambda: (
            SMOKE_POD_LABEL
            not in control_plane.create(pod("after-stop", selected), dry_run=True)[
                "metadata"
            ]["labels"]
        ),
        30,
        "the deleted webhook configuration to stop applying",
    )

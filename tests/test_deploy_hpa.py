"""The optional HorizontalPodAutoscaler component (deploy/components/hpa)."""

from __future__ import annotations

from test_deploy_components import find, overlay


def test_hpa_component_scales_the_deployment_and_owns_its_replicas(tmp_path):
    docs = overlay(tmp_path, "hpa")
    hpa = find(docs, "HorizontalPodAutoscaler", "image-mapper")
    assert hpa is not None and hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "image-mapper"}
    assert hpa["metadata"]["namespace"] == find(docs, "Deployment", "image-mapper")["metadata"]["namespace"]
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert hpa["spec"]["minReplicas"] >= 2 and pdb["spec"].get("minAvailable", 1) < hpa["spec"]["minReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    [container] = find(docs, "Deployment", "image-mapper")["spec"]["template"]["spec"]["containers"]
    limit = container["resources"]["limits"]["cpu"]
    target = metric["resource"]["target"]["averageValue"]
    assert int(target.rstrip("m")) < 1000 * int(limit)  # headroom for a burst under the limit
    assert "replicas" not in find(docs, "Deployment", "image-mapper")["spec"]


def test_without_the_component_the_deployment_keeps_two_replicas(tmp_path):
    docs = overlay(tmp_path)
    assert find(docs, "HorizontalPodAutoscaler", "image-mapper") is None
    assert find(docs, "Deployment", "image-mapper")["spec"]["replicas"] == 2

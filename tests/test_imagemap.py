"""ImageMap semantics: entry forms, most specific wins, conflicts, chains, order."""

from __future__ import annotations

import pytest
from imagemapper import imagemap, reference
from imagemapper.imagemap import (
    MapInput,
    check_candidate,
    parse_entry,
    resolve_namespace,
)
from imagemapper.reference import parse


def imap(name: str, items: list, created: str = "2024-01-01T00:00:00Z", ns: str = "shop") -> MapInput:
    return MapInput(ns, name, created, 1, items)


def rewrite(maps: list[MapInput], image: str) -> str | None:
    verdicts = resolve_namespace(maps)
    layer, _ = imagemap.compile_accepted(verdicts)
    if layer is None:
        return image
    found = imagemap.lookup(layer, parse(image))
    if found is None:
        return image
    return found[0]  # None = excluded


SPEC_EXAMPLE = [
    {"from": "gcr.io/google-samples/kubernetes-bootcamp:v1", "to": "registry.corp/bootcamp:v1"},
    {"from": "nginx", "to": "registry.corp/hub/nginx"},
    {"from": "quay.io/jetstack/*", "to": "registry.corp/quay/jetstack/*"},
    {"from": "quay.io/jetstack/cert-manager-ctl"},
]
DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize("image,expected", [
    ("gcr.io/google-samples/kubernetes-bootcamp:v1", "registry.corp/bootcamp:v1"),
    ("gcr.io/google-samples/kubernetes-bootcamp:v2", "gcr.io/google-samples/kubernetes-bootcamp:v2"),
    ("nginx", "registry.corp/hub/nginx"),
    ("nginx:1.25", "registry.corp/hub/nginx:1.25"),
    ("docker.io/library/nginx:1.25", "registry.corp/hub/nginx:1.25"),
    ("index.docker.io/library/nginx:1.25", "registry.corp/hub/nginx:1.25"),
    (f"nginx:1.25@{DIGEST}", f"registry.corp/hub/nginx:1.25@{DIGEST}"),
    (f"nginx@{DIGEST}", f"registry.corp/hub/nginx@{DIGEST}"),
    ("quay.io/jetstack/cert-manager-controller:v1.14", "registry.corp/quay/jetstack/cert-manager-controller:v1.14"),
    ("quay.io/jetstack/a/b/c:1", "registry.corp/quay/jetstack/a/b/c:1"),
    ("quay.io/jetstack/cert-manager-ctl:v1", None),             # exclusion beats the prefix
    ("quay.io/jetstackx/thing", "quay.io/jetstackx/thing"),     # component boundary
    ("quay.io/jetstack", "quay.io/jetstack"),                   # a prefix covers what is below it
    ("bitnami/nginx", "bitnami/nginx"),
])
def test_spec_example(image, expected):
    assert rewrite([imap("team-mirror", SPEC_EXAMPLE)], image) == expected


def test_most_specific_wins():
    items = [{"from": "docker.io/*", "to": "hub.corp/*"},
             {"from": "docker.io/library/*", "to": "lib.corp/*"},
             {"from": "nginx", "to": "nginx.corp/nginx"},
             {"from": "nginx:1.25", "to": "pinned.corp/nginx:stable"}]
    maps = [imap("m", items)]
    assert rewrite(maps, "nginx:1.25") == "pinned.corp/nginx:stable"
    assert rewrite(maps, "nginx:1.26") == "nginx.corp/nginx:1.26"
    assert rewrite(maps, "redis:7") == "lib.corp/redis:7"
    assert rewrite(maps, "bitnami/redis:7") == "hub.corp/bitnami/redis:7"


def test_whole_registry_prefix_and_hub_namespace_prefix():
    maps = [imap("m", [{"from": "ghcr.io/*", "to": "mirror.corp/ghcr/*"},
                       {"from": "bitnami/*", "to": "mirror.corp/bitnami/*"}])]
    assert rewrite(maps, "ghcr.io/org/app:1") == "mirror.corp/ghcr/org/app:1"
    assert rewrite(maps, "bitnami/redis") == "mirror.corp/bitnami/redis"
    assert rewrite(maps, "docker.io/bitnami/redis") == "mirror.corp/bitnami/redis"


@pytest.mark.parametrize("item,code,reference_code", [
    ({"from": "Nginx:1"}, imagemap.INVALID_REFERENCE, reference.NAME_CONTAINS_UPPERCASE),
    ({"from": "nginx", "to": "registry.corp/nginx:1"}, imagemap.KIND_MISMATCH, ""),
    ({"from": "nginx:1", "to": "registry.corp/*"}, imagemap.KIND_MISMATCH, ""),
    ({"from": "nginx", "to": "registry.corp/*"}, imagemap.KIND_MISMATCH, ""),
    ({"from": "quay.io/*", "to": "registry.corp/quay"}, imagemap.KIND_MISMATCH, ""),
    ({"from": "quay.io/a*", "to": "x.io/*"}, imagemap.MISPLACED_WILDCARD, ""),
    ({"from": "", "to": "x"}, imagemap.FROM_MISSING, ""),
    ({"to": "x"}, imagemap.FROM_MISSING, ""),
    ("nginx", imagemap.NOT_AN_OBJECT, ""),
    ({"from": "nginx", "to": 5}, imagemap.TO_NOT_A_STRING, ""),
    ({"from": "/*", "to": "x.io/*"}, imagemap.PREFIX_EMPTY, ""),
    ({"from": "a..b.io/*", "to": "x.io/*"}, imagemap.PREFIX_INVALID, ""),
    ({"from": "quay.io/*", "to": "x.io/A_/*"}, imagemap.PREFIX_INVALID, ""),
    ({"from": "nginx", "to": "UPPER/Case"}, imagemap.INVALID_REFERENCE, reference.NAME_CONTAINS_UPPERCASE),
    ({"from": "nginx@sha256:abc"}, imagemap.INVALID_REFERENCE, reference.DIGEST_INVALID),
])
def test_invalid_entries_name_the_entry_and_the_cause(item, code, reference_code):
    with pytest.raises(imagemap.EntryError) as err:
        parse_entry(0, item)
    assert (err.value.code, err.value.reference_code) == (code, reference_code)
    assert "spec.map[0]" in str(err.value)


def test_invalid_entry_rejects_the_whole_map():
    verdicts = resolve_namespace([imap("m", [{"from": "nginx", "to": "a.io/nginx"}, {"from": "BAD IMAGE"}])])
    assert verdicts["m"].reason == "Invalid"
    assert "spec.map[1]" in verdicts["m"].message
    assert verdicts["m"].rules == 0
    assert rewrite([imap("m", [{"from": "nginx", "to": "a.io/nginx"}, {"from": "BAD IMAGE"}])], "nginx") == "nginx"


def test_empty_map_is_invalid():
    assert resolve_namespace([imap("m", [])])["m"].reason == "Invalid"


# kubernetes-image-mapper behaviours that image-mapper keeps (docs/migration.md)

def test_identical_duplicates_across_maps_are_fine():
    items = [{"from": "input", "to": "x.io/output"}]
    more = [*items, {"from": "input-3", "to": "x.io/output-3"}]
    verdicts = resolve_namespace([imap("test", items), imap("test2", more, created="2024-02-01T00:00:00Z")])
    assert verdicts["test"].ready and verdicts["test2"].ready


def test_conflict_message_names_both_maps_and_the_older_map_wins():
    older = imap("test", [{"from": "input", "to": "x.io/output"}], created="2024-01-01T00:00:00Z")
    newer = imap("test2", [{"from": "input", "to": "x.io/another-output"}, {"from": "input-3", "to": "x.io/o3"}],
                 created="2024-02-01T00:00:00Z")
    for order in ([older, newer], [newer, older]):
        verdicts = resolve_namespace(order)
        assert verdicts["test"].ready
        assert verdicts["test2"].reason == "Conflict"
        assert 'ImageMap "test"' in verdicts["test2"].message
        assert "docker.io/library/input" in verdicts["test2"].message
        # a rejected map contributes nothing, not even its non-conflicting entries
        assert rewrite(order, "input-3") == "input-3"
        assert rewrite(order, "input") == "x.io/output"


def test_same_age_tie_broken_by_name():
    a = imap("alpha", [{"from": "input", "to": "x.io/a"}])
    b = imap("beta", [{"from": "input", "to": "x.io/b"}])
    assert resolve_namespace([b, a])["beta"].reason == "Conflict"
    assert resolve_namespace([a, b])["beta"].reason == "Conflict"


def test_duplicates_with_differently_spelled_targets_are_identical():
    verdicts = resolve_namespace([imap("a", [{"from": "nginx", "to": "docker.io/library/mirror"}]),
                                  imap("b", [{"from": "docker.io/library/nginx", "to": "mirror"}],
                                       created="2025-01-01T00:00:00Z")])
    assert verdicts["a"].ready and verdicts["b"].ready


def test_namespaces_never_conflict():
    a = imap("a", [{"from": "input", "to": "x.io/a"}], ns="one")
    b = imap("b", [{"from": "input", "to": "x.io/b"}], ns="two")
    assert resolve_namespace([a])["a"].ready and resolve_namespace([b])["b"].ready


def test_fixing_the_winner_lets_the_loser_in_on_the_next_resolution():
    """Where the upstream mapper retries every minute, each sync recomputes from scratch."""
    older = imap("old", [{"from": "input", "to": "x.io/a"}], created="2024-01-01T00:00:00Z")
    newer = imap("new", [{"from": "input", "to": "x.io/b"}], created="2024-02-01T00:00:00Z")
    assert resolve_namespace([older, newer])["new"].reason == "Conflict"
    fixed = imap("old", [{"from": "other", "to": "x.io/a"}], created="2024-01-01T00:00:00Z")
    assert resolve_namespace([fixed, newer])["new"].ready
    assert resolve_namespace([newer])["new"].ready  # or deleting it


def test_rejected_update_is_not_silently_undeployed_by_validation():
    """Upstream drops the old version of an ImageMap whose update was rejected; the
    validating hook refuses such an update instead, so the accepted version stays."""
    accepted = imap("test", [{"from": "input", "to": "x.io/output"}])
    update = imap("test2", [{"from": "input", "to": "x.io/another"}])
    assert "test" in check_candidate(update, [accepted])
    assert check_candidate(imap("test2", [{"from": "input-9", "to": "x.io/ok"}]), [accepted]) is None


def test_exclusion_versus_mapping_of_same_from_is_a_conflict():
    verdicts = resolve_namespace([imap("a", [{"from": "nginx", "to": "x.io/nginx"}]),
                                  imap("b", [{"from": "nginx"}], created="2025-01-01T00:00:00Z")])
    assert verdicts["b"].reason == "Conflict"


def test_conflict_inside_one_map():
    items = [{"from": "nginx", "to": "x.io/a"}, {"from": "docker.io/library/nginx", "to": "x.io/b"}]
    verdict = resolve_namespace([imap("m", items)])["m"]
    assert verdict.reason == "Conflict" and "this ImageMap" in verdict.message


@pytest.mark.parametrize("first,second", [
    ({"from": "nginx", "to": "mirror.io/nginx"}, {"from": "mirror.io/nginx", "to": "other.io/nginx"}),
    ({"from": "nginx", "to": "mirror.io/nginx"}, {"from": "mirror.io/*", "to": "other.io/*"}),
    ({"from": "nginx:1", "to": "mirror.io/nginx:1"}, {"from": "mirror.io/nginx", "to": "other.io/nginx"}),
    ({"from": "quay.io/*", "to": "mirror.io/quay/*"}, {"from": "mirror.io/quay/app:1", "to": "x.io/app:1"}),
    ({"from": "quay.io/*", "to": "mirror.io/quay/*"}, {"from": "mirror.io/*", "to": "x.io/*"}),
    # the reverse direction: the second map's target is matched by the first map's from
    ({"from": "mirror.io/nginx", "to": "other.io/nginx"}, {"from": "nginx", "to": "mirror.io/nginx"}),
])
def test_chains_are_rejected(first, second):
    verdicts = resolve_namespace([imap("a", [first]), imap("b", [second], created="2025-01-01T00:00:00Z")])
    assert verdicts["a"].ready
    assert verdicts["b"].reason == "Conflict" and "chain" in verdicts["b"].message
    assert 'ImageMap "a"' in verdicts["b"].message


def test_not_a_chain():
    verdicts = resolve_namespace([
        imap("a", [{"from": "nginx", "to": "mirror.io/nginx"}]),
        imap("b", [{"from": "mirror.io/nginxx", "to": "x.io/n"}, {"from": "mirror.io/nginx"}],  # exclusion is no chain
             created="2025-01-01T00:00:00Z")])
    assert verdicts["b"].ready, verdicts["b"].message


def test_self_target_inside_own_range_is_allowed():
    verdict = resolve_namespace([imap("m", [{"from": "quay.io/*", "to": "quay.io/mirror/*"}])])["m"]
    assert verdict.ready


def test_100k_entries_resolve_in_linear_time():
    items = [{"from": f"quay.io/org{i // 100}/app{i}", "to": f"mirror.corp/org{i // 100}/app{i}"}
             for i in range(100_000)]
    verdict = resolve_namespace([imap("big", items)])["big"]
    assert verdict.ready and verdict.rules == 100_000
    layer, targets = imagemap.compile_accepted({"big": verdict})
    assert imagemap.lookup(layer, parse("quay.io/org7/app777:v1"))[0] == "mirror.corp/org7/app777:v1"
    assert len(targets["repo"]) == 100_000

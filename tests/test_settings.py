"""settings: every IMAGE_MAPPER_* variable, its default, and the error that names it."""

from __future__ import annotations

import pytest
from imagemapper.settings import DEFAULT_STATE_DIR, Settings, SettingsError, from_env

BASE = {"SHELL_OPERATOR_NAMESPACE": "image-mapper"}


def test_defaults_are_the_documented_ones():
    s = from_env(dict(BASE))
    assert (s.namespace_mode, s.failure_policy, s.timeout_seconds) == ("opt-out", "Fail", 10)
    assert (s.operator_namespace, s.map_namespace, s.state_dir) == ("image-mapper", "image-mapper", DEFAULT_STATE_DIR)
    assert s.webhook_configuration == "shell-operator-hooks-hooks"
    assert s.excluded_namespaces == ()
    assert s.never_mutated == ["image-mapper", "kube-system"]


def test_defaults_without_the_environment_match_the_constructor():
    a, b = from_env({}, require_namespace=False), Settings()
    assert all(getattr(a, name) == getattr(b, name) for name in Settings.__slots__)


def test_empty_values_mean_the_default():
    env = {**BASE, "IMAGE_MAPPER_NAMESPACE_MODE": "", "IMAGE_MAPPER_FAILURE_POLICY": "",
           "IMAGE_MAPPER_TIMEOUT_SECONDS": "", "IMAGE_MAPPER_STATE_DIR": "", "IMAGE_MAPPER_MAP_NAMESPACE": ""}
    s = from_env(env)
    assert (s.namespace_mode, s.failure_policy, s.timeout_seconds, s.state_dir) == (
        "opt-out", "Fail", 10, DEFAULT_STATE_DIR)


def test_every_variable_is_read():
    s = from_env({**BASE, "IMAGE_MAPPER_NAMESPACE_MODE": "opt-in", "IMAGE_MAPPER_FAILURE_POLICY": "Ignore",
                  "IMAGE_MAPPER_TIMEOUT_SECONDS": "30", "IMAGE_MAPPER_MAP_NAMESPACE": "maps",
                  "IMAGE_MAPPER_STATE_DIR": "/run/im//", "VALIDATING_WEBHOOK_CONFIGURATION_NAME": "x",
                  "IMAGE_MAPPER_EXCLUDE_NAMESPACES": "a, b c,a"})
    assert (s.namespace_mode, s.failure_policy, s.timeout_seconds) == ("opt-in", "Ignore", 30)
    assert (s.map_namespace, s.state_dir, s.webhook_configuration) == ("maps", "/run/im", "x-hooks")
    assert s.excluded_namespaces == ("a", "b", "c")  # commas or spaces, repeats once
    assert s.never_mutated == ["a", "b", "c", "image-mapper", "kube-system"]


def test_root_state_dir_stays_root():
    assert from_env({**BASE, "IMAGE_MAPPER_STATE_DIR": "/"}).state_dir == "/"


@pytest.mark.parametrize(("variable", "value"), [
    ("IMAGE_MAPPER_NAMESPACE_MODE", "opt_in"),
    ("IMAGE_MAPPER_FAILURE_POLICY", "fail"),
    ("IMAGE_MAPPER_TIMEOUT_SECONDS", "ten"),
    ("IMAGE_MAPPER_TIMEOUT_SECONDS", "0"),
    ("IMAGE_MAPPER_TIMEOUT_SECONDS", "31"),
    ("IMAGE_MAPPER_STATE_DIR", "relative/dir"),
    ("IMAGE_MAPPER_MAP_NAMESPACE", "Not_A_Namespace"),
    ("SHELL_OPERATOR_NAMESPACE", "-bad"),
    ("IMAGE_MAPPER_EXCLUDE_NAMESPACES", "ok,Bad!"),
])
def test_bad_values_raise_naming_the_variable(variable, value):
    with pytest.raises(SettingsError) as err:
        from_env({**BASE, variable: value})
    assert str(err.value).startswith(variable)


def test_operator_namespace_is_required_unless_told_otherwise():
    with pytest.raises(SettingsError, match=r"^SHELL_OPERATOR_NAMESPACE is not set"):
        from_env({})
    assert from_env({}, require_namespace=False).operator_namespace == ""


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)


@pytest.mark.parametrize(("mode", "counted"), [
    ("enabled", {"maps", "team", "shop"}),
    ("opt-in", {"maps", "team"}),
    ("disabled", {"maps"}),
])
def test_which_namespaces_map_files_count(mode, counted):
    """Issue 11.12: the map namespace always counts; opt-in adds the labeled namespaces."""
    s = from_env({**BASE, "IMAGE_MAPPER_NAMESPACE_MAP_FILES": mode, "IMAGE_MAPPER_MAP_NAMESPACE": "maps"})
    assert s.namespace_map_files == mode
    assert {ns for ns in ("maps", "team", "shop") if s.map_files_count(ns, {"team"})} == counted


def test_bad_namespace_map_files_value_names_the_choices():
    with pytest.raises(SettingsError, match=r"^IMAGE_MAPPER_NAMESPACE_MAP_FILES='labeled'.*enabled, opt-in, disabled"):
        from_env({**BASE, "IMAGE_MAPPER_NAMESPACE_MAP_FILES": "labeled"})


def test_namespace_label_watch_and_check_exist_only_in_opt_in_mode():
    """The Namespace binding and the unlabeled-namespace webhook cost nothing otherwise;
    in opt-in mode the binding hands over only the names of labeled namespaces."""
    from imagemapper import hookconfig

    for mode in ("enabled", "disabled"):
        s = from_env({**BASE, "IMAGE_MAPPER_NAMESPACE_MAP_FILES": mode})
        assert "Namespace" not in [b["kind"] for b in hookconfig.sync_config(s)["kubernetes"]]
        assert hookconfig.VALIDATE_UNLABELED not in [
            w["name"] for w in hookconfig.validate_config(s)["kubernetesValidating"]]
    s = from_env({**BASE, "IMAGE_MAPPER_NAMESPACE_MAP_FILES": "opt-in"})
    config = hookconfig.sync_config(s)
    [binding] = [b for b in config["kubernetes"] if b["kind"] == "Namespace"]
    assert binding == {"name": "namespaces", "apiVersion": "v1", "kind": "Namespace",
                       "labelSelector": {"matchLabels": {"imagemapper.io/map-files": "enabled"}},
                       "keepFullObjectsInMemory": False, "group": "sync", "jqFilter": ".metadata.name",
                       "allowFailure": True}
    assert "namespace" not in next(b for b in config["kubernetes"] if b["name"] == "mapfiles")
    resync = next(b for b in config["schedule"] if b["name"] == "resync")
    assert resync["includeSnapshotsFrom"] == ["mapfiles", "webhook", "namespaces", "imagemaps"]
    [check] = [w for w in hookconfig.validate_config(s)["kubernetesValidating"]
               if w["name"] == hookconfig.VALIDATE_UNLABELED]
    assert check["failurePolicy"] == "Ignore"
    assert check["namespace"]["labelSelector"]["matchExpressions"][1] == {
        "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["image-mapper"]}

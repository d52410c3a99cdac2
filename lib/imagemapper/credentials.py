"""Registry credentials from the files docker, podman and skopeo already use.

Files are searched in this order, and the first that has an entry for the registry wins
(podman's order, with docker's file last):

1. ``--authfile FILE`` when given, else ``$REGISTRY_AUTH_FILE``;
2. ``$XDG_RUNTIME_DIR/containers/auth.json``;
3. ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``.

An entry is ``{"auth": base64("user:password")}`` or ``{"username", "password"}``, under a
key that is a host (``registry.corp``), a URL (``https://index.docker.io/v1/``) or, in
containers' files, a repository or namespace (``registry.corp/team``), the longest match
winning. ``credHelpers`` and ``credsStore`` run ``docker-credential-<name> get`` with a
timeout, as docker does.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading

from imagemapper import kube

HELPER_TIMEOUT = 10  # seconds a docker-credential-* helper may take
_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/")


class Credential:
    __slots__ = ("password", "source", "username")

    def __init__(self, username: str, password: str, source: str):
        self.username = username
        self.password = password
        self.source = source  # the file (or helper) it came from, for messages


def default_files(environ: dict | None = None, authfile: str | None = None) -> list[str]:
    """The credential files to search, in order (missing files are skipped later)."""
    env = os.environ if environ is None else environ
    files = []
    if authfile or env.get("REGISTRY_AUTH_FILE"):
        files.append(authfile or env["REGISTRY_AUTH_FILE"])
    if env.get("XDG_RUNTIME_DIR"):
        files.append(os.path.join(env["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    docker_dir = env.get("DOCKER_CONFIG") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".docker")
    files.append(os.path.join(docker_dir, "config.json"))
    return files


def _normalize_key(key: str) -> str:
    """``https://registry.corp/v2/`` -> ``registry.corp``; Docker Hub's aliases -> docker.io."""
    if key in _HUB_KEYS:
        return "docker.io"
    for scheme in ("https://", "http://"):
        key = key.removeprefix(scheme)
    key = key.rstrip("/")
    for suffix in ("/v1", "/v2"):
        key = key.removesuffix(suffix)
    return "docker.io" if key in _HUB_KEYS else key


class CredentialStore:
    """Lookups over the credential files; each file is read once, whichever thread asks first."""

    def __init__(self, files: list[str]):
        self.files = files
        self._loaded: list[tuple[str, dict]] | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        present = [f for f in self.files if os.path.exists(f)]
        return "searched " + (", ".join(present) if present else "no credential file found: "
                              + ", ".join(self.files))

    def _documents(self) -> list[tuple[str, dict]]:
        with self._lock:
            if self._loaded is None:
                self._loaded = [doc for doc in map(_read_json, self.files) if doc is not None]
            return self._loaded

    def lookup(self, domain: str, path: str = "") -> Credential | None:
        """The credential for ``domain/path``: the most specific key of the first file with one."""
        candidates = [f"{domain}/{path}"[: cut] for cut in _cuts(f"{domain}/{path}")] if path else [domain]
        for source, doc in self._documents():
            auths = kube.mapping(doc, "auths")
            entries = {_normalize_key(k): v for k, v in auths.items() if isinstance(v, dict)}
            for key in candidates:
                cred = _from_entry(entries.get(key), source)
                if cred is not None:
                    return cred
            helpers = kube.mapping(doc, "credHelpers")
            helper = helpers.get(domain) or doc.get("credsStore")
            if isinstance(helper, str) and helper:
                cred = run_helper(helper, domain)
                if cred is not None:
                    return cred
        return None


def _read_json(path: str) -> tuple[str, dict] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except (OSError, ValueError):
        return None
    return (path, doc) if isinstance(doc, dict) else None


def _cuts(name: str) -> list[int]:
    """End positions of ``name`` cut at each ``/``, longest first."""
    cuts = [len(name)]
    pos = name.rfind("/")
    while pos > 0:
        cuts.append(pos)
        pos = name.rfind("/", 0, pos)
    return cuts


def _from_entry(entry: object, source: str) -> Credential | None:
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return Credential(user, password, source)
    if isinstance(entry.get("username"), str):
        return Credential(entry["username"], str(entry.get("password", "")), source)
    return None


def run_helper(helper: str, domain: str) -> Credential | None:
    """Ask ``docker-credential-<helper>`` for a registry's credential (bounded in time)."""
    server = "https://index.docker.io/v1/" if domain == "docker.io" else domain
    try:
        done = subprocess.run([f"docker-credential-{helper}", "get"], input=server, text=True,
                              capture_output=True, timeout=HELPER_TIMEOUT, check=False)
        answer = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    if not isinstance(answer, dict) or answer.get("Username") in (None, "", "<token>"):
        return None  # "<token>" is an OAuth identity token, which this client does not use
    return Credential(answer["Username"], str(answer.get("Secret", "")), f"docker-credential-{helper}")

"""plan --check against real registries (docker-registry on loopback), and copies driven by the plan.

An "upstream" registry stands in for the public registries, a "private" one for the
air-gapped mirror. The plan's own skopeo output copies the sample application across;
``plan --check`` must then find everything, and name what is deleted afterwards.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import registries
import yaml
from imagemapper import credentials, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*argv, env: dict | None = None, cwd: str = ROOT, timeout: float = 120):
    """Run the CLI as a user does, with no credential files of the machine's user."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR")}
    base.update({"PYTHONPATH": os.path.join(ROOT, "lib"), "HOME": "/nonexistent", **(env or {})})
    return subprocess.run([sys.executable, "-m", "imagemapper", *argv], cwd=cwd, env=base,
                          capture_output=True, text=True, timeout=timeout, check=False)


# ----------------------------------------------------------------------------- pure parts

@pytest.mark.parametrize("header,expected", [
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull"',
     ("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                 "scope": "repository:a/b:pull"})),
    ('Basic realm="x, y"', ("basic", {"realm": "x, y"})),
    ('Bearer realm=https://h/t, service=s', ("bearer", {"realm": "https://h/t", "service": "s"})),
    ("", ("", {})),
])
def test_parse_challenge(header, expected):
    assert registry.parse_challenge(header) == expected


def test_credential_files_order():
    env = {"REGISTRY_AUTH_FILE": "/a.json", "XDG_RUNTIME_DIR": "/run/u", "DOCKER_CONFIG": "/dc", "HOME": "/h"}
    assert credentials.default_files(env) == ["/a.json", "/run/u/containers/auth.json", "/dc/config.json"]
    assert credentials.default_files({"HOME": "/h"}, authfile="/x") == ["/x", "/h/.docker/config.json"]


def _auth(user: str, pw: str) -> dict:
    return {"auth": base64.b64encode(f"{user}:{pw}".encode()).decode()}


def test_credential_lookup(tmp_path):
    first = tmp_path / "auth.json"
    first.write_text(json.dumps({"auths": {"registry.corp/team": _auth("team", "1"), "other.io": _auth("o", "2")}}))
    docker = tmp_path / "config.json"
    docker.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": _auth("hub", "3"),
                                            "https://registry.corp/v2/": {"username": "corp", "password": "4"}}}))
    store = credentials.CredentialStore([str(tmp_path / "missing.json"), str(first), str(docker)])
    assert store.lookup("registry.corp", "team/app").username == "team"      # longest key, first file
    assert store.lookup("registry.corp", "teamx/app").username == "corp"     # component boundary
    assert store.lookup("docker.io", "library/nginx").username == "hub"      # Docker Hub's URL key
    assert store.lookup("nowhere.io", "x") is None
    assert store.lookup("other.io", "a").source == str(first)


def test_credential_helper(tmp_path, monkeypatch):
    helper = tmp_path / "docker-credential-fake"
    helper.write_text('#!/bin/sh\nread server\n[ "$server" = registry.corp ] && '
                      'echo \'{"ServerURL":"registry.corp","Username":"h","Secret":"s"}\' || exit 1\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credHelpers": {"registry.corp": "fake"}}))
    store = credentials.CredentialStore([str(config)])
    cred = store.lookup("registry.corp", "x")
    assert (cred.username, cred.password, cred.source) == ("h", "s", "docker-credential-fake")
    assert store.lookup("elsewhere.io", "x") is None


# ----------------------------------------------------------------------------- real registries

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      initContainers: [{name: init, image: "UP/library/busybox:1.36"}]
      containers:
      - {name: web, image: "UP/library/nginx:1.25"}
      - {name: tool, image: "UP/acme/tool:2@TOOL"}
      - {name: metrics, image: "UP/prometheus/node-exporter:v1.8.0"}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    registries.require_tools()
    work = str(tmp_path_factory.mktemp("registries"))
    layout = os.path.join(work, "oci")
    digests = {tag: registries.oci_image(layout, tag, tag, platforms)
               for tag, platforms in (("busybox", ("amd64", "arm64")), ("nginx", ("amd64",)),
                                      ("tool", ("amd64", "arm64")), ("exporter", ("amd64",)))}
    up = registries.Registry(work, "upstream")
    private = registries.Registry(work, "private")
    started = [up, private]
    try:
        for tag, target in (("busybox", "library/busybox:1.36"), ("nginx", "library/nginx:1.25"),
                            ("tool", "acme/tool:2"), ("exporter", "prometheus/node-exporter:v1.8.0")):
            registries.push(layout, tag, f"{up.host}/{target}")
        files = {
            "maps.conf": f"default::\n{up.host}::{private.host}/mirror\n",
            "imagemap.yaml": yaml.safe_dump({
                "apiVersion": "imagemapper.io/v1alpha1", "kind": "ImageMap",
                "metadata": {"name": "shop-mirror", "namespace": "shop"},
                "spec": {"map": [{"from": f"{up.host}/library/nginx", "to": f"{private.host}/shop/nginx"}]}}),
            "app.yaml": APP.replace("UP", up.host).replace("TOOL", digests["tool"]),
        }
        for name, text in files.items():
            with open(os.path.join(work, name), "w") as handle:
                handle.write(text)
        yield {"work": work, "layout": layout, "up": up, "private": private, "digests": digests,
               "started": started}
    finally:
        for reg in started:
            reg.stop()


def rules(world) -> list[str]:
    return ["--map-file", os.path.join(world["work"], "maps.conf"),
            "--imagemap", os.path.join(world["work"], "imagemap.yaml"), "-f", os.path.join(world["work"], "app.yaml")]


def test_copy_with_the_plan_then_check_then_delete_one(world):
    up, private = world["up"].host, world["private"].host
    planned = cli("plan", *rules(world), "--format", "skopeo-copy")
    assert planned.returncode == 0, planned.stderr
    script = os.path.join(world["work"], "copy.sh")
    with open(script, "w") as handle:
        handle.write(planned.stdout)
    copied = subprocess.run(["sh", script, "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert copied.returncode == 0, copied.stderr

    checked = cli("plan", *rules(world), "--check", "--insecure-registry", private)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines() == [
        f"present  {private}/mirror/acme/tool:2@{world['digests']['tool']}",
        f"present  {private}/mirror/library/busybox:1.36",
        f"present  {private}/shop/nginx:1.25",
        f"present  {private}/mirror/prometheus/node-exporter:v1.8.0",
    ]
    assert "4 destination(s): 4 present, 0 missing, 0 not checked" in checked.stderr

    # multi-architecture indexes arrive whole, so their digests are the source's
    assert registries.head_digest(private, "mirror/library/busybox", "1.36") == world["digests"]["busybox"]
    assert registries.head_digest(private, "mirror/acme/tool", "2") == world["digests"]["tool"]

    world["private"].delete("shop/nginx", "1.25")
    checked = cli("plan", *rules(world), "--check", "--insecure-registry", private)
    assert checked.returncode == 1
    assert (f"MISSING  {private}/shop/nginx:1.25: registry {private}: manifest unknown (404) "
            f"(copy of {up}/library/nginx:1.25; imagemap shop-mirror spec.map[0]: {up}/library/nginx -> "
            f"{private}/shop/nginx)") in checked.stdout.splitlines()
    assert "4 destination(s): 3 present, 1 missing, 0 not checked" in checked.stderr

    as_json = cli("plan", *rules(world), "--check", "--insecure-registry", private, "--format", "json")
    statuses = {p["destination"]: p["check"]["status"] for p in json.loads(as_json.stdout)["pairs"]}
    assert statuses[f"{private}/shop/nginx:1.25"] == "missing"
    assert statuses[f"{private}/mirror/acme/tool:2@{world['digests']['tool']}"] == "present"


def test_skopeo_sync_driven_by_the_plan(world, tmp_path):
    up, private = world["up"].host, world["private"].host
    maps = tmp_path / "flat.conf"
    maps.write_text(f"[REPLACE]{up}/*::{private}/flat\n")
    images = [f"{up}/library/busybox:1.36", f"{up}/acme/tool@{world['digests']['tool']}"]
    planned = cli("plan", "--map-file", str(maps), "--format", "skopeo", "--insecure-registry", up, *images)
    assert planned.returncode == 0, planned.stderr
    command = planned.stdout.splitlines()[1]
    assert command == (f"#   skopeo sync --all --preserve-digests --src yaml --dest docker THIS-FILE {private}/flat")
    source = tmp_path / "sync.yaml"
    source.write_text(planned.stdout)
    argv = command[1:].split()
    argv[argv.index("THIS-FILE")] = str(source)
    synced = subprocess.run([*argv, "--dest-tls-verify=false"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert synced.returncode == 0, synced.stderr
    checked = cli("plan", "--map-file", str(maps), "--check", "--insecure-registry", private, *images)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines() == [f"present  {private}/flat/tool@{world['digests']['tool']}",
                                           f"present  {private}/flat/busybox:1.36"]


def test_unreachable_registry_is_named(world, tmp_path):
    port = registries.free_port()  # nothing listens there
    maps = tmp_path / "m.conf"
    maps.write_text(f"default::127.0.0.1:{port}/mirror\n")
    checked = cli("plan", "--map-file", str(maps), "--check", "nginx:1.25")
    assert checked.returncode == 3
    assert checked.stdout == (f"UNREACHABLE 127.0.0.1:{port}/mirror/nginx:1.25: registry 127.0.0.1:{port}: "
                              f"connection to 127.0.0.1:{port} refused (copy of docker.io/library/nginx:1.25; "
                              f"{maps} line 1: default::127.0.0.1:{port}/mirror)\n")
    assert "1 destination(s): 0 present, 0 missing, 1 not checked" in checked.stderr


def test_silent_registry_is_reported_not_waited_on(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []
    stop = threading.Event()

    def accept():  # accept connections and never answer
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        host = f"127.0.0.1:{listener.getsockname()[1]}"
        maps = tmp_path / "m.conf"
        maps.write_text(f"default::{host}/m\n")
        started = time.monotonic()
        checked = cli("plan", "--map-file", str(maps), "--check", "--timeout", "1", "--parallel", "2",
                      "--insecure-registry", host, "a:1", "b:1", "c:1")
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
    assert checked.returncode == 3
    assert checked.stdout.count(f"registry {host}: no answer within 1s") == 3, checked.stdout
    assert elapsed < 8, elapsed


def test_basic_auth_registry(world, tmp_path):
    reg = registries.Registry(world["work"], "basic", htpasswd={"bob": "pw"})
    world["started"].append(reg)
    registries.push(world["layout"], "nginx", f"{reg.host}/app/nginx:1.25", "--dest-creds", "bob:pw")
    maps = tmp_path / "m.conf"
    maps.write_text(f"default::{reg.host}/app\n")
    argv = ("plan", "--map-file", str(maps), "--check", "--insecure-registry", reg.host, "nginx:1.25")

    anonymous = cli(*argv, env={"HOME": str(tmp_path)})
    assert anonymous.returncode == 3
    assert anonymous.stdout.startswith(
        f"DENIED   {reg.host}/app/nginx:1.25: registry {reg.host}: 401 Unauthorized: the registry wants a user "
        f"name and password, and none is stored for {reg.host} (searched no credential file found: "
        f"{tmp_path}/.docker/config.json)")

    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps({"auths": {reg.host: _auth("bob", "pw")}}))
    assert cli(*argv, env={"HOME": str(tmp_path)}).stdout == f"present  {reg.host}/app/nginx:1.25\n"

    (tmp_path / ".docker" / "config.json").write_text(json.dumps({"auths": {reg.host: _auth("bob", "no")}}))
    wrong = cli(*argv, env={"HOME": str(tmp_path)})
    assert wrong.returncode == 3
    assert f"DENIED   {reg.host}/app/nginx:1.25: registry {reg.host}: 401 Unauthorized even with credentials" \
        in wrong.stdout


def test_token_auth_registry(world, tmp_path):
    token = registries.TokenServer(world["work"], {"alice": "s3cret"})
    try:
        reg = registries.Registry(world["work"], "token", token=token)
        world["started"].append(reg)
        registries.push(world["layout"], "nginx", f"{reg.host}/app/nginx:1.25", "--dest-creds", "alice:s3cret")
        maps = tmp_path / "m.conf"
        maps.write_text(f"default::{reg.host}/app\n")
        argv = ("plan", "--map-file", str(maps), "--check", "--insecure-registry", reg.host, "nginx:1.25", "gone:1")
        anonymous = cli(*argv)
        assert anonymous.returncode == 3
        token_host = token.realm.split("/")[2]
        assert (f"DENIED   {reg.host}/app/nginx:1.25: registry {reg.host}: the token server {token_host} refused "
                "an anonymous token") in anonymous.stdout

        auth = tmp_path / "auth.json"
        auth.write_text(json.dumps({"auths": {reg.host: _auth("alice", "s3cret")}}))
        with_creds = cli(*argv, env={"REGISTRY_AUTH_FILE": str(auth)})
        assert with_creds.returncode == 1
        assert with_creds.stdout.splitlines()[0].startswith(
            f"MISSING  {reg.host}/app/gone:1: registry {reg.host}: manifest unknown (404)")
        assert with_creds.stdout.splitlines()[1] == f"present  {reg.host}/app/nginx:1.25"
        assert any("account=alice" not in r and "scope=repository%3Aapp%2Fnginx%3Apull" in r for r in token.requests)
    finally:
        token.stop()


def test_self_signed_registry_needs_the_users_word(world, tmp_path):
    reg = registries.Registry(world["work"], "tls", tls=True)
    world["started"].append(reg)
    registries.push(world["layout"], "nginx", f"{reg.host}/app/nginx:1.25")
    maps = tmp_path / "m.conf"
    maps.write_text(f"default::{reg.host}/app\n")
    argv = ("plan", "--map-file", str(maps), "--check", "nginx:1.25")
    untrusted = cli(*argv)
    assert untrusted.returncode == 3
    assert f"UNREACHABLE {reg.host}/app/nginx:1.25: registry {reg.host}: TLS certificate of {reg.host} not " \
        "trusted (self-signed certificate); use --ca-file" in untrusted.stdout
    assert cli(*argv, "--ca-file", reg.cert).stdout == f"present  {reg.host}/app/nginx:1.25\n"
    assert cli(*argv, "--insecure-registry", reg.host).stdout == f"present  {reg.host}/app/nginx:1.25\n"
    bad = cli(*argv, "--ca-file", str(tmp_path / "nope.pem"))
    assert bad.returncode == 2 and f"error: --ca-file {tmp_path}/nope.pem: No such file or directory" in bad.stderr


def test_invalid_destination_is_reported_by_check(world, tmp_path):
    imap = tmp_path / "imagemap.yaml"
    imap.write_text(yaml.safe_dump({"apiVersion": "imagemapper.io/v1alpha1", "kind": "ImageMap",
                                    "metadata": {"name": "m", "namespace": "default"},
                                    "spec": {"map": [{"from": "ghcr.io/acme/*",
                                                      "to": f"{world['private'].host}/acme/x/*"}]}}))
    image = "ghcr.io/acme/" + "a" * 250 + ":1"
    checked = cli("plan", "--imagemap", str(imap), "--check", image)
    assert checked.returncode == 3
    assert f"error: argument 1: {image} -> {world['private'].host}/acme/x/" in checked.stderr
    assert (f"repository name must not be more than 255 characters (registry {world['private'].host}; "
            "rule imagemap m spec.map[0]") in checked.stderr


def test_odd_registry_answers(tmp_path):
    """A registry without HEAD on manifests (405: GET instead), 403, a 500, a wrong digest."""
    import http.server

    digest = "sha256:" + "c" * 64

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, with_body: bool):
            repo = self.path.split("/")[2]
            if self.command == "HEAD" and repo == "nohead":
                code = 405
            else:
                code = {"nohead": 200, "forbidden": 403, "broken": 500, "wrong": 200}[repo]
            self.send_response(code)
            self.send_header("Docker-Content-Digest", "sha256:" + "d" * 64 if repo == "wrong" else digest)
            self.send_header("Content-Length", "2")
            self.end_headers()
            if with_body:
                self.wfile.write(b"{}")

        def do_HEAD(self):
            self.answer(False)

        def do_GET(self):
            self.answer(True)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        client = registry.Client(insecure=(host,), timeout=5)
        found = {name: client.check(f"{host}/{name}/app@{digest}")
                 for name in ("nohead", "forbidden", "broken", "wrong")}
    finally:
        server.shutdown()
        server.server_close()
    assert (found["nohead"].status, found["nohead"].digest) == ("present", digest)
    assert (found["forbidden"].status, found["forbidden"].detail) == (
        "denied", "403 Forbidden: no pull access to this repository")
    assert (found["broken"].status, found["broken"].detail) == ("error", "unexpected answer 500 to a manifest HEAD")
    wrong = f"registry answered with digest sha256:{'d' * 64}"
    assert (found["wrong"].status, found["wrong"].detail) == ("error", wrong)
    assert all(r.registry == host for r in found.values())

"""Real registries for tests: Debian's docker-registry (distribution 2.8) on loopback.

* :func:`oci_image` writes an OCI image layout holding a tiny image made from the
  static busybox binary, optionally as a multi-architecture index.
* :class:`Registry` runs ``docker-registry serve`` on 127.0.0.1 on a free port with its
  own storage, anonymous, with htpasswd (basic) auth, or with token auth backed by
  :class:`TokenServer`; it is stopped by PID.

Prerequisites (Debian): docker-registry, skopeo, busybox-static, openssl.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

BUSYBOX = "/bin/busybox"
NEEDS = {"docker-registry": "apt-get install docker-registry", "skopeo": "apt-get install skopeo",
         "openssl": "apt-get install openssl"}


def require_tools() -> None:
    """Fail (never skip) with the command that installs what is missing."""
    missing = [f"{tool} ({how})" for tool, how in NEEDS.items() if shutil.which(tool) is None]
    if not os.path.exists(BUSYBOX) or not _static(BUSYBOX):
        missing.append(f"a static {BUSYBOX} (apt-get install busybox-static)")
    if missing:
        raise RuntimeError("missing test prerequisites: " + "; ".join(missing))


def _static(path: str) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    return b"/lib64/ld-linux" not in head and b"/lib/ld-" not in head


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- images

def _blob(layout: str, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as handle:
        handle.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer(label: str) -> bytes:
    """A gzipped tar with /bin/busybox, /bin/sh, and a file that makes each image distinct."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin",):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        with open(BUSYBOX, "rb") as handle:
            data = handle.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for link in ("sh", "sleep", "echo", "true"):
            info = tarfile.TarInfo(f"bin/{link}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        data = label.encode() + b"\n"
        info = tarfile.TarInfo("etc/image-label")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


SERVE = "echo {label}; trap 'exit 0' TERM; while :; do sleep 3600 & wait; done"  # runs until stopped


def oci_image(layout: str, tag: str, label: str, platforms: tuple[str, ...] = ("amd64",),
              command: str = SERVE) -> str:
    """Add ``tag`` to an OCI layout; more than one platform makes an index. Returns its digest.

    The image runs ``/bin/sh -c command`` (``{label}`` is replaced): by default it serves
    until it is stopped; pass e.g. ``"echo done"`` for an init container.
    """
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as handle:
        json.dump({"imageLayoutVersion": "1.0.0"}, handle)
    layer_bytes = _layer(label)
    layer = _blob(layout, layer_bytes)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer_bytes)).hexdigest()
    manifests = []
    for arch in platforms:
        config = _blob(layout, json.dumps({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh", "-c", command.replace("{label}", label)]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode())
        manifest = _blob(layout, json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}]}).encode())
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
                          "platform": {"architecture": arch, "os": "linux"}})
    if len(manifests) > 1:
        top = _blob(layout, json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                         "manifests": manifests}).encode())
        top = {"mediaType": "application/vnd.oci.image.index.v1+json", **top}
    else:
        top = {k: v for k, v in manifests[0].items() if k != "platform"}
    index_path = os.path.join(layout, "index.json")
    index = {"schemaVersion": 2, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as handle:
            index = json.load(handle)
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
    index["manifests"].append({**top, "annotations": {"org.opencontainers.image.ref.name": tag}})
    with open(index_path, "w") as handle:
        json.dump(index, handle)
    return top["digest"]


def push(layout: str, tag: str, destination: str, *extra: str) -> None:
    """Copy one tag of an OCI layout to a registry with skopeo (all platforms, digests kept)."""
    subprocess.run(["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false",
                    *extra, f"oci:{layout}:{tag}", f"docker://{destination}"], check=True,
                   capture_output=True, timeout=120)


# ----------------------------------------------------------------------------- auth

def bcrypt(password: str) -> str:
    """A bcrypt hash for htpasswd, from the C library's crypt(3) (libxcrypt has $2b$)."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = base64.b64encode(os.urandom(16), b"./").decode()[:22]
    out = lib.crypt(password.encode(), f"$2b$05${salt}".encode())
    if not out or not out.startswith(b"$2b$"):
        raise RuntimeError("the C library's crypt() has no bcrypt; install libxcrypt (libcrypt1)")
    return out.decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Docker's token protocol: GET /token?service=&scope= with basic auth -> a signed JWT.

    Tokens are RS256 JWTs signed with openssl and carry the certificate in ``x5c``; the
    registry trusts that certificate as its ``rootcertbundle``.
    """

    def __init__(self, workdir: str, users: dict[str, str], service: str = "test-registry"):
        self.workdir, self.users, self.service = workdir, users, service
        self.key = os.path.join(workdir, "token.key")
        self.cert = os.path.join(workdir, "token.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key,
                        "-out", self.cert, "-days", "2", "-subj", "/CN=test-token-issuer"],
                       check=True, capture_output=True, timeout=60)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"],
                             check=True, capture_output=True, timeout=30).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                user = server._user(self.headers.get("Authorization", ""))
                if user is None:
                    self.send_response(401)
                    self.end_headers()
                    return
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                body = json.dumps({"token": server._token(user, query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _user(self, header: str) -> str | None:
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password else None

    def _token(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": "test-issuer", "sub": user, "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                                   input=signing_input.encode(), check=True, capture_output=True,
                                   timeout=30).stdout
        return signing_input + "." + _b64url(signature)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ----------------------------------------------------------------------------- registry

def ca_signed(workdir: str, names: tuple[str, ...]) -> tuple[str, str, str]:
    """A CA and a serving certificate for DNS ``names``, signed by it: (ca.pem, cert.pem, key.pem)."""
    ca, ca_key = os.path.join(workdir, "ca.crt"), os.path.join(workdir, "ca.key")
    cert, key, csr = (os.path.join(workdir, f"serving.{ext}") for ext in ("crt", "key", "csr"))
    ext = os.path.join(workdir, "serving.ext")
    with open(ext, "w") as handle:
        handle.write("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    for argv in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=image-mapper test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={names[0]}"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext],
    ):
        subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)
    return ca, cert, key


def self_signed(workdir: str, ip: str) -> tuple[str, str]:
    """A self-signed serving certificate for an IP address: (cert.pem, key.pem)."""
    cert, key = os.path.join(workdir, "tls.crt"), os.path.join(workdir, "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", f"/CN={ip}", "-addext", f"subjectAltName=IP:{ip}"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class Registry:
    """One ``docker-registry serve`` process on 127.0.0.1, stopped by PID."""

    def __init__(self, workdir: str, name: str = "registry", htpasswd: dict[str, str] | None = None,
                 token: TokenServer | None = None, tls: bool = False, listen: str | None = None,
                 certificate: tuple[str, str] | None = None):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.host = listen or f"127.0.0.1:{free_port()}"
        config = {
            "version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": os.path.join(self.dir, "storage")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "image-mapper-tests"},
        }
        if tls or certificate:
            self.cert, key = certificate or self_signed(self.dir, "127.0.0.1")
            config["http"]["tls"] = {"certificate": self.cert, "key": key}
        self.scheme = "https" if tls or certificate else "http"
        if htpasswd:
            path = os.path.join(self.dir, "htpasswd")
            with open(path, "w") as handle:
                handle.writelines(f"{user}:{bcrypt(pw)}\n" for user, pw in htpasswd.items())
            config["auth"] = {"htpasswd": {"realm": "test", "path": path}}
        if token:
            config["auth"] = {"token": {"realm": token.realm, "service": token.service,
                                        "issuer": "test-issuer", "rootcertbundle": token.cert}}
        self.config = os.path.join(self.dir, "config.yml")
        with open(self.config, "w") as handle:
            yaml.safe_dump(config, handle)
        self.log = open(os.path.join(self.dir, "registry.log"), "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(["docker-registry", "serve", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.logtext()}")
            try:
                urllib.request.urlopen(f"{self.scheme}://{self.host}/v2/", timeout=2,
                                       context=ssl._create_unverified_context())
                return
            except urllib.error.HTTPError:
                return  # 401: up, and asking for credentials
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not answer on {self.host}: {self.logtext()}")

    def logtext(self) -> str:
        with open(self.log.name, "rb") as handle:
            return handle.read()[-4000:].decode(errors="replace")

    def delete(self, repository: str, tag: str) -> None:
        """Delete a tag's manifest through the API (the registry has delete enabled)."""
        head = urllib.request.Request(f"http://{self.host}/v2/{repository}/manifests/{tag}", method="HEAD",
                                      headers={"Accept": "application/vnd.oci.image.index.v1+json, "
                                                         "application/vnd.oci.image.manifest.v1+json"})
        digest = urllib.request.urlopen(head, timeout=10).headers["Docker-Content-Digest"]
        urllib.request.urlopen(urllib.request.Request(
            f"http://{self.host}/v2/{repository}/manifests/{digest}", method="DELETE"), timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def head_digest(host: str, repository: str, reference: str) -> str:
    """The digest a plain-HTTP registry serves for a tag or digest (any manifest type)."""
    accept = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
              "application/vnd.docker.distribution.manifest.list.v2+json, "
              "application/vnd.docker.distribution.manifest.v2+json")
    request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{reference}", method="HEAD",
                                     headers={"Accept": accept})
    return urllib.request.urlopen(request, timeout=10).headers["Docker-Content-Digest"]

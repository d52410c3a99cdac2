"""Does a manifest exist? A small OCI distribution client: HEAD /v2/<repo>/manifests/<ref>.

Only the standard library: ``plan --check`` sends at most three requests per image (HEAD,
token, HEAD), so an HTTP client library or a registry SDK would be a runtime dependency
for little gain. Anonymous, basic and bearer-token registries are handled; credentials
come from the files docker, podman and skopeo write (see :mod:`imagemapper.credentials`).

HTTPS is verified unless the user names the registry as insecure; then HTTPS is tried
without verification, then plain HTTP (what docker does for ``insecure-registries``).
Every request has a timeout, and :func:`check_all` bounds the whole run: a registry that
does not answer is reported as such, never waited on beyond its deadline.
"""

from __future__ import annotations

import base64
import json
import queue
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from imagemapper.credentials import Credential, CredentialStore
from imagemapper.reference import DEFAULT_DOMAIN, InvalidReference, Reference, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MANIFEST_TYPES = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.docker.distribution.manifest.list.v2+json, "
                  "application/vnd.docker.distribution.manifest.v2+json")
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
USER_AGENT = "image-mapper-plan-check"

PRESENT, MISSING, UNREACHABLE, DENIED, ERROR = "present", "missing", "unreachable", "denied", "error"


class Result:
    """What the registry said about one image."""

    __slots__ = ("detail", "digest", "image", "registry", "status")

    def __init__(self, image: str, registry: str, status: str, detail: str = "", digest: str = ""):
        self.image = image
        self.registry = registry
        self.status = status
        self.detail = detail
        self.digest = digest

    def as_dict(self) -> dict:
        return {"status": self.status, "registry": self.registry, "detail": self.detail,
                "digest": self.digest}


class _Failure(Exception):
    def __init__(self, status: str, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def endpoint(domain: str) -> str:
    """The host that serves a registry's API (Docker Hub's is not docker.io)."""
    return DOCKER_HUB_ENDPOINT if domain == DEFAULT_DOMAIN else domain


class Client:
    """Manifest HEADs with authentication; one instance is shared by the worker threads."""

    def __init__(self, credentials: CredentialStore | None = None, insecure: tuple[str, ...] = (),
                 ca_file: str | None = None, timeout: float = 10.0):
        self.credentials = credentials or CredentialStore([])
        self.insecure = set(insecure)
        self.timeout = timeout
        self._verified = ssl.create_default_context()
        if ca_file:  # in addition to the system's CAs, for registries with a private CA
            self._verified.load_verify_locations(cafile=ca_file)
        self._unverified = ssl._create_unverified_context()  # only for registries named insecure

    def check(self, image: str) -> Result:
        """Look one image up; never raises."""
        registry = image.partition("/")[0]
        try:
            ref = parse(image)
        except InvalidReference as exc:
            return Result(image, registry, ERROR, f"not a valid image reference: {exc}")
        registry = ref.domain
        deadline = time.monotonic() + self.timeout
        try:
            status, digest = self._head(ref, deadline)
        except _Failure as failure:
            return Result(image, registry, failure.status, failure.detail)
        except Exception as exc:  # noqa: BLE001 (one odd answer must not end the whole check)
            return Result(image, registry, ERROR, f"{type(exc).__name__}: {exc}")
        if status == 404:
            return Result(image, registry, MISSING, "manifest unknown (404)")
        if ref.digest and digest and digest != ref.digest:
            return Result(image, registry, ERROR, f"registry answered with digest {digest}")
        return Result(image, registry, PRESENT, "", digest or ref.digest or "")

    # --------------------------------------------------------------------- requests

    def _head(self, ref: Reference, deadline: float) -> tuple[int, str]:
        host = endpoint(ref.domain)
        target = ref.digest or ref.tag or "latest"
        path = f"/v2/{ref.path}/manifests/{target}"
        scheme, status, headers = self._request_any_scheme(host, path, {}, deadline)
        auth: dict = {}
        if status == 401:
            auth = self._authorize(ref, host, headers.get("WWW-Authenticate", ""), deadline)
            status, headers = self._request(f"{scheme}://{host}{path}", "HEAD", auth, deadline)
            if status == 401:
                raise _Failure(DENIED, "401 Unauthorized even with "
                               + ("credentials" if auth else "no credentials"))
        if status == 405:  # a registry without HEAD on manifests: GET, and leave the body unread
            status, headers = self._request(f"{scheme}://{host}{path}", "GET", auth, deadline)
        if status == 403:
            raise _Failure(DENIED, "403 Forbidden: no pull access to this repository")
        if status not in (200, 404):
            raise _Failure(ERROR, f"unexpected answer {status} to a manifest HEAD")
        return status, headers.get("Docker-Content-Digest", "")

    def _request_any_scheme(self, host: str, path: str, auth: dict[str, str], deadline: float) -> Any:
        """HTTPS; for an insecure registry also plain HTTP when the TLS handshake fails."""
        try:
            status, headers = self._request(f"https://{host}{path}", "HEAD", auth, deadline)
            return "https", status, headers
        except _Failure as failure:
            if host not in self.insecure or failure.status != UNREACHABLE:
                raise
            status, headers = self._request(f"http://{host}{path}", "HEAD", auth, deadline)
            return "http", status, headers

    def _context(self, url: str) -> ssl.SSLContext:
        host = urllib.parse.urlsplit(url).netloc
        return self._unverified if host in self.insecure else self._verified

    def _request(self, url: str, method: str, headers: dict[str, str], deadline: float, read: bool = False) -> Any:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Failure(UNREACHABLE, f"no answer within {self.timeout:g}s")
        request = urllib.request.Request(url, method=method, headers={
            "Accept": MANIFEST_TYPES, "User-Agent": USER_AGENT, **headers})
        handlers = [urllib.request.HTTPSHandler(context=self._context(url))]
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(request, timeout=remaining) as response:
                body = response.read(1 << 20) if read else b""
                return (response.status, response.headers, body) if read else (response.status, response.headers)
        except urllib.error.HTTPError as exc:
            return (exc.code, exc.headers, b"") if read else (exc.code, exc.headers)
        except TimeoutError:
            raise _Failure(UNREACHABLE, f"no answer within {self.timeout:g}s") from None
        except urllib.error.URLError as exc:
            raise _Failure(UNREACHABLE, _why(exc.reason, url)) from None
        except (OSError, ValueError) as exc:
            raise _Failure(UNREACHABLE, _why(exc, url)) from None

    # --------------------------------------------------------------------- auth

    def _authorize(self, ref: Reference, host: str, challenge: str, deadline: float) -> dict[str, str]:
        scheme, params = parse_challenge(challenge)
        cred = self.credentials.lookup(ref.domain, ref.path)
        if scheme == "basic":
            if cred is None or not cred.username:
                raise _Failure(DENIED, "401 Unauthorized: the registry wants a user name and "
                               f"password, and none is stored for {ref.domain} "
                               f"({self.credentials.describe()})")
            return {"Authorization": "Basic " + _basic(cred)}
        if scheme != "bearer" or "realm" not in params:
            raise _Failure(DENIED, f"401 Unauthorized with an unsupported challenge {challenge!r}")
        if cred is not None and not self._may_send_secret(params["realm"], host):
            raise _Failure(DENIED, f"the token server {params['realm']} is plain HTTP: credentials "
                           f"for {ref.domain} are only sent there with --insecure-registry {host}")
        token = self._token(params, f"repository:{ref.path}:pull", cred, deadline)
        return {"Authorization": "Bearer " + token}

    def _token(self, params: dict, scope: str, cred: Credential | None, deadline: float) -> str:
        """A bearer token from the registry's token server (docker's token protocol)."""
        realm = params["realm"]
        query = {"scope": params.get("scope") or scope}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {}
        if cred is not None and cred.username:
            headers["Authorization"] = "Basic " + _basic(cred)
        separator = "&" if "?" in realm else "?"
        status, _, body = self._request(realm + separator + urllib.parse.urlencode(query), "GET",
                                        headers, deadline, read=True)
        if status == 401:
            raise _Failure(DENIED, f"the token server {urllib.parse.urlsplit(realm).netloc} refused "
                           + ("the stored credentials" if headers else
                              f"an anonymous token, and no credentials are stored ({self.credentials.describe()})"))
        if status != 200:
            raise _Failure(ERROR, f"the token server answered {status}")
        try:
            answer = json.loads(body)
            token: str = answer.get("token") or answer["access_token"]
            return token
        except (ValueError, KeyError, AttributeError, TypeError):
            raise _Failure(ERROR, "the token server's answer has no token") from None

    def _may_send_secret(self, realm: str, host: str) -> bool:
        """Credentials go over HTTPS only, unless the user named the registry (or realm) insecure."""
        parts = urllib.parse.urlsplit(realm)
        return parts.scheme == "https" or parts.netloc in self.insecure or host in self.insecure


def _basic(cred: Credential) -> str:
    return base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()


def _why(reason: object, url: str) -> str:
    host = urllib.parse.urlsplit(url).netloc
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (f"TLS certificate of {host} not trusted ({reason.verify_message}); "
                "use --ca-file, or --insecure-registry if you trust this network")
    if isinstance(reason, ssl.SSLError):
        hint = ("; a plain-HTTP registry? pass --insecure-registry " + host
                if reason.reason == "WRONG_VERSION_NUMBER" else "")
        return f"TLS handshake with {host} failed ({reason.reason or reason}){hint}"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve {host.rpartition(':')[0] or host}"
    if isinstance(reason, ConnectionRefusedError):
        return f"connection to {host} refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "no answer in time"
    return f"{host}: {getattr(reason, 'strerror', None) or reason}"


def parse_challenge(header: str) -> tuple[str, dict]:
    """``Bearer realm="https://a",service="b"`` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip(" ,").lower()
        i = eq + 1
        if rest[i:i + 1] == '"':
            end = i + 1
            value = []
            while end < len(rest) and rest[end] != '"':
                if rest[end] == "\\" and end + 1 < len(rest):
                    end += 1
                value.append(rest[end])
                end += 1
            params[key] = "".join(value)
            i = end + 1
        else:
            end = rest.find(",", i)
            end = len(rest) if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end + 1
    return scheme.lower(), params


# ----------------------------------------------------------------------------- many at once

def check_all(client: Client, images: list[str], parallel: int = 8) -> dict[str, Result]:
    """Check every image with at most ``parallel`` requests in flight.

    Workers are daemon threads and the wait has a hard deadline: an image whose check has
    not finished by then (a silent DNS server, a registry that trickles bytes) is reported
    as unreachable, and the process is free to exit.
    """
    images = list(dict.fromkeys(images))
    todo: queue.Queue = queue.Queue()
    for image in images:
        todo.put(image)
    done: queue.Queue = queue.Queue()
    workers = max(1, min(parallel, len(images)))

    def work() -> None:
        while True:
            try:
                image = todo.get_nowait()
            except queue.Empty:
                return
            done.put((image, client.check(image)))

    for _ in range(workers):
        threading.Thread(target=work, daemon=True).start()
    rounds = -(-len(images) // workers)
    deadline = time.monotonic() + client.timeout * (rounds + 1)
    results: dict[str, Result] = {}
    while len(results) < len(images):
        try:
            image, result = done.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        results[image] = result
    for image in images:
        if image not in results:
            results[image] = Result(image, image.partition("/")[0], UNREACHABLE,
                                    f"no answer within {client.timeout:g}s")
    return results

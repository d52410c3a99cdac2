#!/usr/bin/env python3
"""A plain in-process admission webhook, the baseline for tests/e2e/latency.py.

One long-lived process, a thread per connection, no process per request. Two paths:

* `/allow` answers allowed and changes nothing: the floor of any Python webhook;
* `/imagemapper` runs image-mapper's own `admission.mutate` on the replica's snapshot
  (PYTHONPATH=lib, IMAGE_MAPPER_STATE_DIR), in this process: our logic without
  shell-operator's process per request.

usage: baseline_webhook.py ADDRESS PORT CERT KEY
"""

from __future__ import annotations

import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Go's server does for kube-apiserver
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK add about 40 ms to every answer.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        response = {"uid": request["uid"], "allowed": True}
        if self.path.startswith("/imagemapper"):
            from imagemapper import admission, settings

            response.update(admission.mutate(request, settings.from_env(require_namespace=False)))
            if "patch" in response:
                response["patchType"] = "JSONPatch"
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str]) -> None:
    address, port, cert, key = argv
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer((address, int(port)), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])

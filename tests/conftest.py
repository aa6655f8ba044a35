"""Fixtures shared by the test suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]

# Tests import the example's modules the way the example's scripts do.
sys.path.insert(0, str(ROOT / "examples" / "pennfudan"))
sys.path.insert(0, str(ROOT / "tests"))

settings.register_profile(
    "detkit", deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("detkit")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic Penn-Fudan-layout folder shared by the session (read-only use)."""
    from detkit.data import write_synthetic_pennfudan

    return write_synthetic_pennfudan(
        tmp_path_factory.mktemp("pennfudan"),
        num_images=12,
        seed=1,
        size_range=(48, 96),
        negative_fraction=0.2,
        thin_fraction=0.5,
    )


def _serve(routes, tls=None):
    """Start a threaded HTTP(S) server on 127.0.0.1 for ``routes``; return (server, base URL)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            body, headers = route if isinstance(route, tuple) else (route, {})
            self.send_response(200)
            self.send_header(
                "Content-Type", headers.get("Content-Type", "application/octet-stream")
            )
            self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if tls is not None else "http"
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def http_server():
    """A local HTTP server on 127.0.0.1 serving ``routes``: ``{path: bytes or (bytes, headers)}``.

    A route given as ``(body, {"Content-Length": "999"})`` lets a test announce more bytes than
    it sends, i.e. simulate a transfer cut short; ``"Content-Type"`` sets the type sent.
    """
    routes: dict[str, object] = {}
    server, base = _serve(routes)
    yield base, routes
    server.shutdown()
    server.server_close()


@pytest.fixture
def https_server(tmp_path_factory):
    """Like ``http_server``, over TLS with a self-signed certificate for 127.0.0.1.

    Yields ``(base, routes, certificate_path)``: clients that do not trust the certificate
    fail verification, as they do against a server with an incomplete certificate chain.
    """
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    routes: dict[str, object] = {}
    server, base = _serve(routes, tls)
    yield base, routes, cert
    server.shutdown()
    server.server_close()

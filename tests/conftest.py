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


@pytest.fixture
def http_server():
    """A local HTTP server on 127.0.0.1 serving ``routes``: ``{path: bytes or (bytes, headers)}``.

    A route given as ``(body, {"Content-Length": "999"})`` lets a test announce more bytes than
    it sends, i.e. simulate a transfer cut short.
    """
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    routes: dict[str, object] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            body, headers = route if isinstance(route, tuple) else (route, {})
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield base, routes
    server.shutdown()
    server.server_close()

"""Model tests run their tiny convolutions on one thread.

On a shared 2-core machine, torch's 2-thread OpenMP pool spin-waits against other processes and
makes these small models 10-50x slower (a MobileNet step measured 0.12 s on one thread, up to
6 s on two); the thread count is restored after this directory's tests.
"""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from typing import ClassVar

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch):
    """Name lookups other than the loopback fail, so no test can reach the internet."""
    real = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(socket.EAI_NONAME, f"tests may not resolve {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)


class _Files(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self):
        _Files.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def weights_server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving ``root`` (never the internet).

    Yields ``(base_url, root, requests)``; files written under ``root`` are served, anything
    else answers 404.
    """
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_Files, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Files.requests = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, _Files.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def closed_port():
    """A local port nobody listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return port


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """torch.hub's cache pointed at an empty folder for the test."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    return hub

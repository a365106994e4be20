"""harness/tcp_proxy.py's TcpProxy, in front of a small HTTP server on 127.0.0.1 (no other service):
it records request lines, goes down (open connections reset, new ones refused), comes back on the same
URL, cuts itself after a number of bytes, and slows uploads down. The S3 fault tests rely on each."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.tcp_proxy import TcpProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self._reply(self.path.encode())

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._reply(str(len(body)).encode())

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass   # the cut resets the server's side too: a broken pipe there is the point, not noise to print


@pytest.fixture(scope="module")
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def proxies():
    made: list[TcpProxy] = []

    def make(*args, **kwargs) -> TcpProxy:
        made.append(TcpProxy(*args, **kwargs))
        return made[-1]

    yield make
    for proxy in made:
        proxy.stop()


def _request(proxy: TcpProxy, method: str, path: str, body: bytes | None = None, timeout: float = 10) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        assert response.status == 200
        return response.read()
    finally:
        conn.close()


def test_requests_pass_and_are_recorded_in_order(server, proxies):
    proxy = proxies(server)
    assert proxy.endpoint_url == f"http://127.0.0.1:{proxy.port}"
    assert _request(proxy, "GET", "/a/first") == b"/a/first"
    assert _request(proxy, "PUT", "/a/second", b"x" * 1000) == b"1000"
    assert [(method, path) for _, method, path in proxy.requests] == [("GET", "/a/first"), ("PUT", "/a/second")]
    assert proxy.bytes_forwarded > 1000
    proxy.stop()
    assert not proxy.cut.is_set(), "a proxy stopped after a clean run reports a cut"


def test_down_resets_open_connections_refuses_new_ones_and_restore_brings_it_back(server, proxies):
    proxy = proxies(server)
    held = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    held.request("GET", "/before")
    assert held.getresponse().read() == b"/before"

    proxy.go_down()
    assert proxy.cut.is_set()
    with pytest.raises(OSError):   # the kept-alive connection was reset
        held.request("GET", "/during")
        held.getresponse()
    held.close()
    with pytest.raises(ConnectionRefusedError):
        _request(proxy, "GET", "/during")

    proxy.restore()
    assert not proxy.cut.is_set()
    assert _request(proxy, "GET", "/after") == b"/after"   # the same URL as before the outage
    assert [path for _, _, path in proxy.requests] == ["/before", "/after"]


def test_a_cut_after_some_bytes_breaks_the_transfer_and_refuses_later_connections(server, proxies):
    proxy = proxies(server, cut_after_bytes=100_000)
    assert _request(proxy, "PUT", "/small", b"s" * 10_000) == b"10000"   # before the cut: passes
    with pytest.raises(OSError):
        _request(proxy, "PUT", "/large", b"l" * 1_000_000)
    assert proxy.cut.is_set()
    with pytest.raises(ConnectionRefusedError):
        _request(proxy, "GET", "/later")
    proxy.stop()
    assert proxy.cut.is_set(), "stop() must not hide that the cut happened"

    proxy.restore()   # back, and the spent cut does not strike again
    assert _request(proxy, "PUT", "/again", b"a" * 500_000) == b"500000"


def test_a_delay_slows_uploads_down(server, proxies):
    proxy = proxies(server, delay=0.05)
    started = time.monotonic()
    assert _request(proxy, "PUT", "/slow", b"d" * (512 << 10)) == str(512 << 10).encode()
    # at least 8 chunks of at most 64 KiB each waited 0.05 s
    assert time.monotonic() - started >= 0.4

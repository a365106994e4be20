"""A TCP proxy on 127.0.0.1 in front of a real endpoint, for observing and breaking traffic.

It records the HTTP request lines that pass (method and path, in order), so a
test can tell in which order objects were written. It can take the endpoint
away: ``go_down()`` resets every open connection and refuses new ones, as a
host that died would; ``restore()`` brings it back on the same port. Given
``cut_after_bytes`` it goes down by itself part-way through a transfer: requests
before the cut succeed, the connection carrying the cut is reset, and later
connections are refused (``cut`` tells a test that this happened). Given
``delay`` it sleeps that many seconds before forwarding each chunk (up to 64 KiB)
towards the endpoint, so an upload lasts long enough to be interrupted.
"""

from __future__ import annotations

import re
import socket
import threading
import time

from harness.pg_cluster import free_port

_REQUEST_LINE = re.compile(rb"(GET|PUT|POST|DELETE|HEAD) (/[^ \r\n]*) HTTP/1\.1\r\n")
_CHUNK = 65536


class TcpProxy:
    def __init__(self, target_port: int, cut_after_bytes: int | None = None, delay: float = 0.0) -> None:
        self.requests: list[tuple[float, str, str]] = []
        self.target_port = target_port
        self.cut_after_bytes = cut_after_bytes
        self.delay = delay
        # bytes forwarded towards the endpoint (requests and uploads), over every connection
        self.bytes_forwarded = 0
        # set while the endpoint is away (a cut, or go_down()); stop() leaves it as it is
        self.cut = threading.Event()
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._listen()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        # on the same port after restore(): clients keep the endpoint URL they were given. The port
        # was free a moment ago, but an outgoing connection may have picked it as its local port since.
        deadline = time.monotonic() + 5
        while True:
            try:
                listener = socket.create_server(("127.0.0.1", self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return   # the listener was shut: the proxy went down or stopped
            if self.cut.is_set():   # accepted in the instant before the listener shut
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, outbound: bool) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data or self.cut.is_set():
                    break
                if outbound:
                    with self._lock:
                        for match in _REQUEST_LINE.finditer(data):
                            self.requests.append((time.monotonic(), match.group(1).decode(), match.group(2).decode()))
                        self.bytes_forwarded += len(data)
                        over = self.cut_after_bytes is not None and self.bytes_forwarded > self.cut_after_bytes
                    if over:
                        self.go_down()
                        return
                    if self.delay:
                        time.sleep(self.delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def go_down(self) -> None:
        """Take the endpoint away: reset every open connection and refuse new ones until restore()."""
        self.cut.set()
        self._close()

    def restore(self) -> None:
        """Bring the endpoint back on the same port, with no further cut (``cut_after_bytes`` is spent)."""
        if not self.cut.is_set():
            return
        self.cut_after_bytes = None
        self.cut.clear()
        self._listen()

    def stop(self) -> None:
        """Close for good. ``cut`` is left as it was, so a test can still ask whether the cut happened."""
        self._close()

    def _close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _reset(listener)   # shutdown() wakes the thread blocked in accept(); close() alone would not
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _reset(sock)


def _reset(sock: socket.socket) -> None:
    """Close with a reset (RST, not FIN), waking any thread blocked on the socket."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)   # wakes a thread blocked in recv() or accept() (close() alone does not)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass

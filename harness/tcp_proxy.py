"""A TCP proxy on 127.0.0.1 in front of a real endpoint, for observing and breaking traffic.

It records the HTTP request lines that pass (method and path, in order), so a
test can tell in which order objects were written; and, given
``cut_after_bytes``, it goes down for good part-way through a transfer: requests
before the cut succeed, the connection carrying the cut is reset, and later
connections are refused.
"""

from __future__ import annotations

import re
import socket
import threading
import time

from harness.pg_cluster import free_port

_REQUEST_LINE = re.compile(rb"(GET|PUT|POST|DELETE|HEAD) (/[^ \r\n]*) HTTP/1\.1\r\n")


class TcpProxy:
    def __init__(self, target_port: int, cut_after_bytes: int | None = None) -> None:
        self.requests: list[tuple[float, str, str]] = []
        self.target_port = target_port
        self.cut_after_bytes = cut_after_bytes
        self.bytes_forwarded = 0
        self.cut = threading.Event()
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, counts: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if counts:
                    with self._lock:
                        for match in _REQUEST_LINE.finditer(data):
                            self.requests.append((time.monotonic(), match.group(1).decode(), match.group(2).decode()))
                        self.bytes_forwarded += len(data)
                        over = self.cut_after_bytes is not None and self.bytes_forwarded > self.cut_after_bytes
                    if over:
                        self.go_down()
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self.go_down()

    def go_down(self) -> None:
        """Stop listening and reset every open connection."""
        self.cut.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
            except OSError:
                pass

"""A Slack incoming-webhook receiver over HTTP on 127.0.0.1 that records each post."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness.pg_cluster import free_port

WEBHOOK_PATH = "/services/T000PGDR/B000PGDR/test-webhook-token"


class SlackReceiver:
    def __init__(self) -> None:
        self.posts: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                try:
                    payload = json.loads(body)
                except json.JSONDecodeError:
                    payload = {"raw": body}
                with receiver._lock:
                    receiver.posts.append({"path": self.path, "payload": payload})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def airflow_conn(self) -> str:
        """A `slackwebhook` connection whose password is the full webhook URL."""
        return json.dumps({"conn_type": "slackwebhook", "password": self.url})

    def texts(self) -> list[str]:
        """Everything posted, flattened to one string per post (text and blocks)."""
        with self._lock:
            return [json.dumps(post["payload"]) for post in self.posts]

    def wait_for(self, count: int = 1, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.posts) >= count:
                    return list(self.posts)
            time.sleep(0.05)
        return list(self.posts)

    def clear(self) -> None:
        with self._lock:
            self.posts.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

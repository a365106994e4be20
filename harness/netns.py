"""A network namespace of its own for a process that stands for another machine (needs root and ``ip``).

:class:`IsolatedNetwork` makes a named namespace joined to the host by a veth pair (host side
``10.231.N.1``, namespace side ``10.231.N.2``). The host's services listen on 127.0.0.1 only,
which a namespace cannot reach, so for each port the process is allowed to use a forwarder listens
on the host side of the pair and relays to 127.0.0.1: the process sees its services at
``10.231.N.1:<same port>``, as a worker sees its broker and databases across a network, and reaches
nothing else of the host. :meth:`IsolatedNetwork.environ` rewrites an environment's addresses
(URLs, Airflow connections in JSON) accordingly and :meth:`IsolatedNetwork.argv` runs a command
inside. :meth:`IsolatedNetwork.close` stops the forwarders and deletes the namespace (with it the pair).

    net = IsolatedNetwork.create("worker-a")
    env = net.environ(env)                       # 127.0.0.1 -> 10.231.N.1, its ports forwarded
    subprocess.Popen(net.argv(["airflow", "celery", "worker"]), env=env, start_new_session=True)
    net.close()
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
_ADDRESS = re.compile(r"127\.0\.0\.1:(\d+)")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def netns_available() -> str | None:
    """None when this process can make network namespaces, else why not (not root, no ``ip``, refused)."""
    if os.geteuid() != 0:
        return "not root"
    probe = f"pgdr-probe-{os.getpid()}"
    try:
        made = _ip("netns", "add", probe, check=False)
    except FileNotFoundError:
        return "the ip command (iproute2) is missing"
    if made.returncode != 0:
        return f"ip netns add refused: {made.stderr.strip()}"
    try:
        # a veth pair into it too: a namespace without a way in is of no use
        peer = f"pgprobe{os.getpid() % 100000}"
        paired = _ip("link", "add", f"{peer}h", "type", "veth", "peer", "name", f"{peer}n", "netns", probe,
                     check=False)
        if paired.returncode != 0:
            return f"ip link add type veth refused: {paired.stderr.strip()}"
        _ip("link", "delete", f"{peer}h", check=False)
        return None
    finally:
        _ip("netns", "delete", probe, check=False)


@dataclass
class IsolatedNetwork:
    name: str
    subnet: int
    forwarders: dict[int, socket.socket] = field(default_factory=dict, repr=False)
    _connections: list[socket.socket] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def host_address(self) -> str:
        return f"10.231.{self.subnet}.1"

    @property
    def inner_address(self) -> str:
        return f"10.231.{self.subnet}.2"

    @classmethod
    def create(cls, label: str) -> IsolatedNetwork:
        """A namespace named after ``label`` and this process (``pgdr-<label>-<pid>``), joined by a veth pair."""
        used = _ip("-o", "-4", "addr", "show").stdout
        subnet = next(n for n in range(1, 255) if f"10.231.{n}." not in used)
        net = cls(name=f"pgdr-{label}-{os.getpid()}", subnet=subnet)
        host_if, inner_if = f"pg{os.getpid() % 100000}h{subnet}", f"pg{os.getpid() % 100000}n{subnet}"
        try:
            _ip("netns", "add", net.name)
            _ip("link", "add", host_if, "type", "veth", "peer", "name", inner_if)
            _ip("link", "set", inner_if, "netns", net.name)
            _ip("addr", "add", f"{net.host_address}/30", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("-n", net.name, "addr", "add", f"{net.inner_address}/30", "dev", inner_if)
            _ip("-n", net.name, "link", "set", inner_if, "up")
            _ip("-n", net.name, "link", "set", "lo", "up")
        except BaseException:
            net.close()
            raise
        return net

    def argv(self, command: list[str]) -> list[str]:
        """``command`` run inside the namespace (``ip netns exec`` execs it: the pid is the command's)."""
        return ["ip", "netns", "exec", self.name, *command]

    def environ(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with every 127.0.0.1 service it names reached through this namespace's forwarders."""
        out = {}
        for name, value in env.items():
            for port in self._ports(value):
                self.forward(port)
            out[name] = value.replace(LOOPBACK, self.host_address)
        return out

    @staticmethod
    def _ports(value: str) -> set[int]:
        ports = {int(p) for p in _ADDRESS.findall(value)}
        try:
            conn = json.loads(value)
        except ValueError:
            conn = None
        if isinstance(conn, dict) and conn.get("host") == LOOPBACK and conn.get("port"):
            ports.add(int(conn["port"]))
        return ports

    def forward(self, port: int) -> None:
        """Relay ``host_address:port`` (reachable from the namespace) to ``127.0.0.1:port``."""
        if port in self.forwarders:
            return
        listener = socket.create_server((self.host_address, port), backlog=64)
        self.forwarders[port] = listener
        threading.Thread(target=self._accept, args=(listener, port), daemon=True,
                         name=f"netns-forward-{port}").start()

    def _accept(self, listener: socket.socket, port: int) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection((LOOPBACK, port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self._connections += [client, upstream]
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        with self._lock:
            for sock in (client, upstream):
                if sock in self._connections:
                    self._connections.remove(sock)
                sock.close()

    def close(self) -> None:
        for listener in self.forwarders.values():
            listener.close()
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except OSError:
                    pass
            self._connections.clear()
        _ip("netns", "delete", self.name, check=False)  # takes the veth pair with it


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((target, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass

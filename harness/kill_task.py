"""Run one pgdr operator's ``execute`` in a child process and SIGKILL it when a condition holds.

The child is a real worker in miniature: a fresh Python process that builds the operator
with the keyword arguments given, runs ``execute(context)`` with the settings and
connections of its environment (``AIRFLOW_VAR_PGDR_*``, ``AIRFLOW_CONN_*``) and starts the
PostgreSQL tools as children of its own, exactly as an Airflow task process does. Only the
child's own pid is killed (as the kernel's OOM killer or ``kill -9`` of a task would), so
whatever it started is left to fend for itself: a test sees what a dead worker really leaves.

Two ways to choose the moment:

* ``wait_until(predicate)``: poll anything the test can see (staging files, S3 objects,
  ``pg_stat_activity``) and kill when it turns true;
* ``pause_at="module.Class.method"``: the child wraps that function so the first call
  writes a marker file and then sleeps; ``wait_paused()`` returns once the child sits
  exactly there (for windows too narrow to hit by polling, e.g. between the last object
  and ``manifest.json``). Nothing in pgdr is replaced: the call it pauses in never runs.

    task = KillableTask.start("pgdr.operators.backup.LogicalBackupOperator",
                              {"task_id": "dump_and_upload", "conn_id": "care_commons_db"}, env=env)
    task.wait_until(lambda: any(staging.rglob("*.dat.zst")))
    task.kill()

``run_to_end()`` runs the same child to completion and returns what ``execute`` returned
(the XCom value), for the "next run recovers" half of a test.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class KillableTask:
    def __init__(self, process: subprocess.Popen, spec_dir: Path) -> None:
        self.process = process
        self.spec_dir = spec_dir
        self.pause_file = spec_dir / "paused"
        self.result_file = spec_dir / "result.json"
        self.log_file = spec_dir / "output.log"

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls, operator: str, kwargs: dict, *, env: dict | None = None, pause_at: str | None = None,
              pause_after_calls: int = 0, pause_when: str = "before", context: dict | None = None) -> KillableTask:
        """Start ``operator`` (dotted path) with ``kwargs`` in a child; returns at once.

        ``pause_at`` pauses the child in the (``pause_after_calls`` + 1)-th call of that function,
        ``before`` it runs or ``after`` it returned. ``context`` overrides dag_id, run_id, task_id."""
        spec_dir = Path(tempfile.mkdtemp(prefix="pgdr-kill-task-"))
        spec = {"operator": operator, "kwargs": kwargs, "pause_at": pause_at,
                "pause_after_calls": pause_after_calls, "pause_when": pause_when,
                "context": {"dag_id": "pg_backup_daily", "run_id": f"kill_task__{os.urandom(3).hex()}",
                            "task_id": kwargs.get("task_id", "task"), **(context or {})},
                "pause_file": str(spec_dir / "paused"), "result_file": str(spec_dir / "result.json")}
        (spec_dir / "spec.json").write_text(json.dumps(spec))
        log = open(spec_dir / "output.log", "wb")  # noqa: SIM115 - the child holds it
        process = subprocess.Popen([sys.executable, "-m", "harness.kill_task", str(spec_dir / "spec.json")],
                                   cwd=REPO_ROOT, env=dict(env if env is not None else os.environ),
                                   stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return cls(process, spec_dir)

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def wait_until(self, predicate, timeout: float = 120.0, what: str = "the kill condition"):
        """Poll ``predicate`` every 20 ms while the child runs; its first true value is returned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.process.poll() is not None:
                raise AssertionError(f"the task ended (exit {self.process.returncode}) before {what}:\n"
                                     + self.output()[-3000:])
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n" + self.output()[-3000:])

    def wait_paused(self, timeout: float = 120.0) -> None:
        self.wait_until(self.pause_file.exists, timeout, "the child to reach its pause point")

    def kill(self) -> None:
        """SIGKILL the task process only (not its process group), and reap it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def run_to_end(self, timeout: float = 600.0):
        """Wait for the child to finish; its ``execute`` return value, or AssertionError with its output."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the task did not finish in time:\n" + self.output()[-3000:]) from None
        if self.process.returncode != 0 or not self.result_file.exists():
            raise TaskFailed(self.process.returncode, self.output())
        return json.loads(self.result_file.read_text())["result"]


class TaskFailed(AssertionError):
    def __init__(self, returncode: int, output: str) -> None:
        super().__init__(f"the task failed (exit {returncode}):\n{output[-3000:]}")
        self.returncode = returncode
        self.output = output


def run_task(operator: str, kwargs: dict, *, env: dict | None = None, context: dict | None = None):
    """Run ``operator`` in a child to the end; its return value (raises TaskFailed with the output)."""
    return KillableTask.start(operator, kwargs, env=env, context=context).run_to_end()


# --- the child --------------------------------------------------------------------------------

def _resolve(dotted: str):
    """(owner, attribute name) for ``package.module.Class.method`` or ``package.module.function``."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise ImportError(dotted)


def _install_pause(dotted: str, pause_file: str, after_calls: int, when: str) -> None:
    import threading

    owner, name = _resolve(dotted)
    original = getattr(owner, name)
    calls = [0]
    lock = threading.Lock()

    def pause() -> None:
        Path(pause_file).write_text(str(os.getpid()))
        while True:  # until the test kills this process
            time.sleep(3600)

    def paused(*args, **kwargs):
        with lock:
            calls[0] += 1
            now = calls[0] == after_calls + 1
        if now and when == "before":
            pause()
        result = original(*args, **kwargs)
        if now:
            pause()
        return result

    setattr(owner, name, paused)


def _child(spec_path: str) -> int:
    sys.path[:0] = [str(REPO_ROOT / "plugins"), str(REPO_ROOT)]
    spec = json.loads(Path(spec_path).read_text())
    if spec["pause_at"]:
        _install_pause(spec["pause_at"], spec["pause_file"], spec["pause_after_calls"], spec["pause_when"])
    from types import SimpleNamespace

    owner, name = _resolve(spec["operator"])
    operator = getattr(owner, name)(**spec["kwargs"])
    ctx = spec["context"]
    ti = SimpleNamespace(dag_id=ctx["dag_id"], run_id=ctx["run_id"], task_id=ctx["task_id"], map_index=-1,
                         try_number=1)
    result = operator.execute({"ti": ti, "run_id": ctx["run_id"], "params": ctx.get("params", {}),
                               "outlet_events": _OutletEvents()})
    Path(spec["result_file"]).write_text(json.dumps({"result": result}, default=str))
    return 0


class _OutletEvents(dict):
    """The task context's ``outlet_events``: an accessor per Asset, created on first use."""

    def __missing__(self, key):
        from types import SimpleNamespace

        value = self[key] = SimpleNamespace(extra={})
        return value


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))

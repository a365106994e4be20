"""pgdr's trigger forms as a person reads them: readable refusals and documentation that opens.

An Airflow plugin for the api-server:

- ``TriggerFormRefusals``, a root middleware: a run of ``pg_restore`` asked for (the UI's trigger
  form or REST) is checked by pgdr's own validation (:func:`pgdr.restore.request.trigger_refusal`)
  before Airflow's. A bad request is answered 400 with every bad field named in plain words, and no
  run is created. Airflow's own check stops at the first bad field and shows the jsonschema dump
  with the regex; the Params' patterns stay as the second line (the CLI, an api-server without this
  plugin) and the ``prepare`` task checks everything again with the settings. Only a caller Airflow
  would let trigger the DAG gets pgdr's answer: anyone else gets Airflow's own 401/403, so the
  protected databases' names never reach someone who may not see them.
- ``/pgdr-docs/<name>.md``: the project's docs/ rendered as HTML for a logged-in user, so the links
  in the DAGs' documentation and the form's descriptions open from the UI (a repository path does
  not). The directory is ``PGDR_DOCS_DIR``, else ``docs/`` beside this plugins directory.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

# fastapi at module level: FastAPI resolves the route's annotations (strings here) in this module's globals
from airflow.plugins_manager import AirflowPlugin  # noqa: TID253 - a plugin module is Airflow surface
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

DOCS_PREFIX = "/pgdr-docs"
# the DAGs whose trigger requests pgdr checks first; the path Airflow's REST API and UI post to
FORM_DAGS = ("pg_restore",)
_TRIGGER = re.compile(r"/api/v2/dags/(?P<dag_id>[A-Za-z0-9_.\-]+)/dagRuns/?")
_DOC_NAME = re.compile(r"[A-Za-z0-9_.\-]+\.md")


def docs_dir() -> Path:
    return Path(os.environ.get("PGDR_DOCS_DIR") or Path(__file__).resolve().parent.parent / "docs")


def _token(scope) -> str | None:
    """The caller's JWT as Airflow reads it: the Authorization header first, then the UI's cookie."""
    from http.cookies import SimpleCookie

    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials.strip()
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:   # a malformed cookie header: Airflow answers it
        return None
    return cookie["_token"].value if "_token" in cookie else None


async def _user(scope):
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    try:
        return await resolve_user_from_token(_token(scope))
    except Exception:   # no, expired or invalid token: Airflow's own answer follows
        return None


def _protected_databases() -> list[str]:
    """pgdr_databases as the api-server sees it (environment, secrets backend or the Variables UI)."""
    from airflow.models.variable import Variable

    from pgdr.core import settings_checks as check
    from pgdr.settings import protected_databases_at_parse

    raw = Variable.get("pgdr_databases", default_var=None)
    if raw is None:
        return protected_databases_at_parse()
    return list(check.databases("databases", raw))


def _may_trigger(user, dag_id: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return get_auth_manager().is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN,
                                                details=DagDetails(id=dag_id), user=user)


async def _refusal(scope, dag_id: str, body: bytes) -> str | None:
    """pgdr's refusal of this trigger request, or None to let Airflow answer it."""
    from starlette.concurrency import run_in_threadpool

    from pgdr.restore.request import trigger_refusal

    try:
        conf = (json.loads(body or b"{}") or {}).get("conf") or {}
    except (ValueError, AttributeError):
        return None   # not a JSON object: Airflow's validation names the problem
    if not isinstance(conf, dict):
        return None
    user = await _user(scope)
    if user is None or not await run_in_threadpool(_may_trigger, user, dag_id):
        return None
    try:
        protected = await run_in_threadpool(_protected_databases)
    except Exception:   # an unreadable setting: the prepare task refuses with the settings' own message
        return None
    return trigger_refusal(conf, protected, defaults={"database": protected[0] if protected else ""})


class TriggerFormRefusals:
    """ASGI middleware: a request to trigger a DAG in FORM_DAGS that pgdr refuses is answered 400 with
    pgdr's message (``detail``, which the trigger form shows); every other request passes untouched."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        match = _TRIGGER.fullmatch(scope.get("path", "")) if scope["type"] == "http" else None
        if not match or scope.get("method") != "POST" or match["dag_id"] not in FORM_DAGS:
            await self.app(scope, receive, send)
            return
        received, body = [], b""
        while True:
            message = await receive()
            received.append(message)
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            # the body read here is handed on to Airflow exactly as it came
            return received.pop(0) if received else await receive()

        refusal = await _refusal(scope, match["dag_id"], body)
        if refusal is None:
            await self.app(scope, replay, send)
            return
        from starlette.responses import JSONResponse

        await JSONResponse({"detail": refusal}, status_code=400)(scope, replay, send)


def _docs_app() -> FastAPI:
    from markdown_it import MarkdownIt

    app = FastAPI(title="pgdr documentation", docs_url=None, redoc_url=None, openapi_url=None)
    renderer = MarkdownIt("commonmark").enable("table")

    @app.get("/", response_class=HTMLResponse)
    @app.get("/{name}", response_class=HTMLResponse)
    async def page(request: Request, name: str = "README.md") -> HTMLResponse:
        if await _user(request.scope) is None:
            raise HTTPException(status_code=401, detail="log in to Airflow first")
        if name == "README.md":
            names = sorted(p.name for p in docs_dir().glob("*.md"))
            text = "# pgdr documentation\n\n" + "\n".join(f"- [{n}]({n})" for n in names)
        elif _DOC_NAME.fullmatch(name) and (docs_dir() / name).is_file():
            text = (docs_dir() / name).read_text(encoding="utf-8")
        else:
            raise HTTPException(status_code=404, detail=f"no document {name!r} in pgdr's docs")
        title = html.escape(name)
        return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
                            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.5}"
                            "pre,code{background:#f4f4f4}table{border-collapse:collapse}"
                            "td,th{border:1px solid #ccc;padding:.2em .5em}</style></head><body>"
                            f"{renderer.render(text)}</body></html>")

    return app


class PgdrFormsPlugin(AirflowPlugin):
    name = "pgdr_forms"
    fastapi_root_middlewares = [{"middleware": TriggerFormRefusals, "name": "pgdr readable trigger refusals"}]
    fastapi_apps = [{"app": _docs_app(), "url_prefix": DOCS_PREFIX, "name": "pgdr documentation"}]

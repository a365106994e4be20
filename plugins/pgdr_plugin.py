"""Airflow plugin: pgdr's recovery status and backup history, live inside the Airflow UI.

Airflow loads this file from its plugins folder (``[core] plugins_folder``, the repository's
``plugins/``) in every component; only the api-server serves it. It adds

- a FastAPI app mounted at ``/pgdr``: ``/pgdr/`` the recovery status (per protected database the
  recovery window, the worst-case loss now, the newest good backup of each kind, the last
  verification and drill: :mod:`pgdr.report.status`), ``/pgdr/history`` the backup history page
  (:mod:`pgdr.report.history_page`, the page ``pg_backup_verify`` also uploads to S3 for the day
  Airflow itself is gone), both read live from the bucket;
- a top-level navigation entry, "Recovery status", showing ``/pgdr/`` inside the UI.

Both pages sit behind Airflow's own authentication and authorisation, through the auth manager the
api-server runs (the same dependencies as Airflow's REST API): no token (header or the UI's cookie)
gets 401, and a user who may not read every pgdr DAG gets 403. The figures come from the records of
those DAGs, so reading them is the permission that fits.

The FastAPI app is built on the first request, so the scheduler, the workers and the DAG processor,
which load plugins too, never import the api-server's security module.
"""

from __future__ import annotations

import logging
from html import escape

# a plugin file is Airflow's surface: the loader looks for an AirflowPlugin subclass at import
from airflow.plugins_manager import AirflowPlugin  # noqa: TID253

URL_PREFIX = "/pgdr"
# the DAGs whose records the pages show; reading the pages needs read access to each
PGDR_DAGS = ("pg_backup_daily", "pg_backup_verify", "pg_wal_archive", "pg_restore", "pg_restore_test",
             "pg_data_retention")
ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" '
        'stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M3 12a9 9 0 1 0 3-6.7"/>'
        '<path d="M3 3v6h6"/><path d="M12 7v5l3 3"/></svg>')

log = logging.getLogger("pgdr.plugin")


def _refusal(status_code: int, detail: str):
    from fastapi.responses import HTMLResponse

    if status_code == 401:
        title = "Sign in to Airflow first"
        text = (f'The recovery status is shown to signed-in Airflow users only. <a href="/auth/login?next='
                f'{URL_PREFIX}/">Sign in</a>, then open it again.')
    elif status_code == 403:
        title = "Not allowed"
        text = ("Reading pgdr's recovery status needs read access to every pgdr DAG ("
                + ", ".join(PGDR_DAGS) + "). Ask an Airflow administrator for it.")
    else:
        title = f"HTTP {status_code}"
        text = escape(detail)
    body = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title></head>'
            f'<body style="font:14px system-ui,sans-serif;margin:24px"><h1 class="refused">{escape(title)}</h1>'
            f"<p>{text}</p></body></html>")
    return HTMLResponse(body, status_code=status_code)


def _read(render):
    """Settings, store and the page; a deployment fault is a 503 with a plain, redacted line."""
    from fastapi.responses import HTMLResponse

    from pgdr.core.redaction import safe_error
    from pgdr.settings import load_settings
    from pgdr.store.s3 import BackupStore

    try:
        settings = load_settings()
        store = BackupStore.from_settings(settings, log)
        html = render(settings, store)
    except Exception as err:  # noqa: BLE001 - the page says why, the log has the class
        log.warning("pgdr page: %s", type(err).__name__)
        return _refusal(503, f"The backup store cannot be read: {safe_error(err)[:300]}")
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def _status_page(settings, store) -> str:
    from pgdr.report.status import collect_status, render_status

    status, _ = collect_status(store, databases=settings.databases,
                               rto_budget_seconds=settings.rto_budget_minutes * 60,
                               physical=settings.physical_backups, log=log)
    return render_status(status, history_href="history")


def _history_page(settings, store) -> str:
    from pgdr.report.history import collect
    from pgdr.report.history_page import render_page

    return render_page(collect(store, databases=settings.databases,
                               rto_budget_seconds=settings.rto_budget_minutes * 60, log=log))


def build_app():
    """The FastAPI app: every page depends on Airflow's user and its read access to each pgdr DAG."""
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI
    from fastapi.exceptions import HTTPException
    from fastapi.responses import Response

    app = FastAPI(title="pgdr recovery status", docs_url=None, redoc_url=None, openapi_url=None)
    readers = [Depends(requires_access_dag("GET", param_dag_id=dag_id)) for dag_id in PGDR_DAGS]

    @app.exception_handler(HTTPException)
    async def refused(request, exc: HTTPException):
        return _refusal(exc.status_code, str(exc.detail))

    @app.get("/", dependencies=readers)
    def status_page():
        return _read(_status_page)

    @app.get("/history", dependencies=readers)
    def history_page():
        return _read(_history_page)

    @app.get("/icon.svg")
    def icon():
        return Response(ICON, media_type="image/svg+xml")

    return app


class LazyApp:
    """An ASGI app that builds :func:`build_app` on its first request."""

    def __init__(self) -> None:
        self._app = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            self._app = build_app()
        await self._app(scope, receive, send)


class PgdrPlugin(AirflowPlugin):
    name = "pgdr"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "pgdr recovery status"}]
    external_views = [{
        "name": "Recovery status",
        "href": f"{URL_PREFIX}/",
        "url_route": "pgdr-recovery-status",
        "destination": "nav",
        "nav_top_level": True,
        "icon": f"{URL_PREFIX}/icon.svg",
    }]

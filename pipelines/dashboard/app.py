"""The dashboard's FastAPI app: a static page, JSON views over the journal, and authenticated controls.

Handlers are plain `def` (FastAPI runs them in its thread pool) because psycopg2 blocks. Reads use the
writer role on a read-only session; only the control endpoints write, and only after authentication.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2.extensions
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from pipelines.dashboard import journal_views
from pipelines.dashboard.auth import LoginThrottle, SessionSigner, token_matches, verify_password
from pipelines.dashboard.controls import Control, apply_control
from pipelines.dashboard.settings import DashboardSettings
from tradeloom.adapters.db import Database
from tradeloom.errors import DatabaseUnavailableError

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "tradeloom_dashboard_session"
# Script and styles come from /static only, so an injected string can never run as code.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
                               " connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class LoginBody(BaseModel):
    username: str = Field(default="operator", max_length=100)
    password: str = Field(max_length=1000)


class ControlBody(BaseModel):
    reason: str = Field(default="", max_length=200)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def create_app(settings: DashboardSettings, db: Database, *,
               clock: Callable[[], datetime] = lambda: datetime.now(tz=UTC)) -> FastAPI:
    app = FastAPI(title="tradeloom dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    secret = (settings.session_secret.get_secret_value().encode() if settings.session_secret
              else secrets.token_bytes(32))
    signer = SessionSigner(secret, settings.session_hours * 3600)
    throttle = LoginThrottle()

    @app.exception_handler(DatabaseUnavailableError)
    def database_down(request: Request, error: DatabaseUnavailableError) -> JSONResponse:
        del request
        return JSONResponse({"detail": str(error)}, status_code=503)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    # -- who is asking ------------------------------------------------------------------------------------
    def current_user(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and settings.token is not None:
            if token_matches(header[7:].strip(), settings.token.get_secret_value()):
                return "token"
            return None
        cookie = request.cookies.get(COOKIE)
        session = signer.verify(cookie) if cookie else None
        return session.user if session else None

    def reader(request: Request) -> str | None:
        user = current_user(request)
        if settings.read_requires_login and user is None:
            raise HTTPException(401, "login required to read the dashboard")
        return user

    def operator(request: Request) -> str:
        if not settings.controls_enabled:
            raise HTTPException(403, "controls are disabled: set TRADELOOM_DASHBOARD_PASSWORD_HASH or "
                                     "TRADELOOM_DASHBOARD_TOKEN")
        user = current_user(request)
        if user is None:
            raise HTTPException(401, "login required to use the controls")
        by_cookie = not request.headers.get("authorization", "").lower().startswith("bearer ")
        if by_cookie and not request.headers.get("content-type", "").startswith("application/json"):
            # A cross-site form cannot send JSON without a preflight: this plus SameSite=Strict stops CSRF.
            raise HTTPException(415, "controls take a JSON body (Content-Type: application/json)")
        return user

    # Dependencies as default values: under `from __future__ import annotations` FastAPI cannot resolve an
    # Annotated alias that is local to this function.
    read_access = Depends(reader)
    operate_access = Depends(operator)

    @contextmanager
    def read_only() -> Iterator[psycopg2.extensions.connection]:
        conn = db.connect(db.settings.writer_role)
        try:
            conn.set_session(readonly=True, autocommit=True)
            yield conn
        finally:
            conn.close()

    def target(conn: psycopg2.extensions.connection) -> journal_views.Target:
        found = journal_views.resolve_target(conn, settings.strategy, settings.mode)
        if found is None:
            raise HTTPException(404, "the journal holds no decisions yet: start the executor (or a replay), "
                                     "or pass --strategy")
        return found

    # -- pages ------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        allowed = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
        if name not in allowed:
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(STATIC / name, media_type=allowed[name])

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # -- session --------------------------------------------------------------------------------------
    @app.get("/api/session")
    def session(request: Request) -> dict[str, Any]:
        user = current_user(request)
        return {"authenticated": user is not None, "user": user, "controls_enabled": settings.controls_enabled,
                "password_login": settings.password_hash is not None,
                "read_requires_login": settings.read_requires_login, "refresh_seconds": settings.refresh_seconds}

    @app.post("/api/login")
    def login(body: LoginBody, request: Request, response: Response) -> dict[str, Any]:
        client = _client(request)
        if settings.password_hash is None:
            raise HTTPException(403, "password login is disabled: set TRADELOOM_DASHBOARD_PASSWORD_HASH")
        if throttle.blocked(client):
            raise HTTPException(429, "too many failed logins: wait a minute")
        ok = body.username == settings.username and verify_password(body.password,
                                                                    settings.password_hash.get_secret_value())
        if not ok:
            throttle.failed(client)
            log.warning("dashboard login refused for %r from %s", body.username, client)
            raise HTTPException(401, "wrong username or password")
        throttle.succeeded(client)
        log.info("dashboard login: %s from %s", body.username, client)
        response.set_cookie(COOKIE, signer.sign(body.username), max_age=int(signer.max_age_seconds), httponly=True,
                            samesite="strict", secure=request.url.scheme == "https", path="/")
        return {"authenticated": True, "user": body.username}

    @app.post("/api/logout")
    def logout(response: Response) -> dict[str, bool]:
        response.delete_cookie(COOKIE, path="/")
        return {"authenticated": False}

    # -- views ----------------------------------------------------------------------------------------
    @app.get("/api/state")
    def state(_: str | None = read_access) -> dict[str, Any]:
        """Everything the page shows, in one round trip."""
        with read_only() as conn:
            found = target(conn)
            return {
                "target": {"strategy": found.strategy, "mode": found.mode},
                "positions": journal_views.positions(conn, found),
                "equity": journal_views.equity_curve(conn, found, settings.timezone),
                "signals": journal_views.signals(conn, found),
                "orders": journal_views.orders(conn, found),
                "status": journal_views.status(conn, found, clock(), settings.kill_switch_path(found.strategy),
                                               settings.pause_path(found.strategy)),
            }

    @app.get("/api/positions")
    def positions(_: str | None = read_access) -> dict[str, Any]:
        with read_only() as conn:
            return journal_views.positions(conn, target(conn))

    @app.get("/api/equity")
    def equity(_: str | None = read_access) -> dict[str, Any]:
        with read_only() as conn:
            return journal_views.equity_curve(conn, target(conn), settings.timezone)

    @app.get("/api/signals")
    def signals(_: str | None = read_access) -> dict[str, Any]:
        with read_only() as conn:
            return journal_views.signals(conn, target(conn))

    @app.get("/api/orders")
    def orders(_: str | None = read_access) -> dict[str, Any]:
        with read_only() as conn:
            return journal_views.orders(conn, target(conn))

    @app.get("/api/status")
    def status(_: str | None = read_access) -> dict[str, Any]:
        with read_only() as conn:
            found = target(conn)
            return journal_views.status(conn, found, clock(), settings.kill_switch_path(found.strategy),
                                        settings.pause_path(found.strategy))

    # -- controls -------------------------------------------------------------------------------------
    @app.post("/api/controls/{name}")
    def control(name: str, body: ControlBody, request: Request, user: str = operate_access) -> JSONResponse:
        try:
            chosen = Control(name)
        except ValueError as error:
            raise HTTPException(404, f"control {name!r}: expected kill, pause or resume") from error
        strategy = settings.strategy
        if strategy is None:  # with --strategy set, the controls work even while the database is down
            with read_only() as conn:
                strategy = target(conn).strategy
        result = apply_control(settings, db, strategy, chosen, f"dashboard:{user}", body.reason, _client(request))
        return JSONResponse({"control": chosen.value, "strategy": strategy, "file": str(result.file),
                             "actor": result.actor, "at": result.at.isoformat(), "journaled": result.journaled,
                             "journal_error": result.journal_error})

    return app

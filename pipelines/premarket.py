"""Pre-market checks: is today a session on the exchange calendar; are the database, MLflow, the
`@champion` model (loadable, same feature spec as the online engine) and the broker session usable.

The result is written atomically to `.loom/health/premarket.json`; the executor refuses to start unless
that file is green and dated for the session it is about to trade.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tradeloom.adapters.db import Database
from tradeloom.errors import ConfigError

log = logging.getLogger(__name__)
HEALTH_FILE = "premarket.json"
NSE_TZ = ZoneInfo("Asia/Kolkata")
# Kite access tokens expire at about 06:00 IST every day.
KITE_TOKEN_ROLLOVER = time(6, 0)


class PremarketSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRADELOOM_PREMARKET_", env_file=".env", extra="ignore")

    # exchange_calendars code: XBOM (BSE) shares the NSE equity holiday list.
    calendar: str = "XBOM"
    registered_model: str = "tradeloom-direction_daily"
    broker: Literal["paper", "kite", "fyers"] = "paper"
    token_file: Path | None = None
    require_champion: bool = True
    min_instruments: int = Field(default=1, ge=0)
    health_dir: Path | None = None  # default: <home>/health, where the executor looks


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


def is_session(day: date, calendar: str = "XBOM") -> bool:
    """Whether the exchange trades on `day` (weekends and exchange holidays are not sessions)."""
    import exchange_calendars

    sessions = exchange_calendars.get_calendar(calendar)
    try:
        return bool(sessions.is_session(day.isoformat()))
    except (ValueError, exchange_calendars.errors.DateOutOfBounds) as error:
        raise ConfigError(f"day={day.isoformat()} outside the {calendar} calendar's range: {error}") from error


def _database(db: Database) -> Check:
    try:
        with db.transaction() as conn, conn.cursor() as cur:
            cur.execute("select count(*) from schema_migrations")
            row = cur.fetchone()
        return Check("database", True, f"reachable, {row[0] if row else 0} migrations applied")
    except Exception as error:  # any failure here is the finding, not a crash
        return Check("database", False, str(error).splitlines()[0])


def _instruments(db: Database, minimum: int) -> Check:
    try:
        with db.transaction() as conn, conn.cursor() as cur:
            cur.execute("select count(*) from instruments")
            row = cur.fetchone()
        count = int(row[0]) if row else 0
        return Check("instrument_master", count >= minimum, f"{count} instruments (need >= {minimum})")
    except Exception as error:
        return Check("instrument_master", False, str(error).splitlines()[0])


def _mlflow(db: Database) -> Check:
    from pipelines.mlflow_server import registry_target

    target = registry_target(db.settings)
    try:
        target.client().search_registered_models(max_results=1)
        return Check("mlflow", True, "tracking and registry reachable")
    except Exception as error:
        return Check("mlflow", False, f"{type(error).__name__}: {str(error).splitlines()[0][:300]}")


def _champion(db: Database, name: str, required: bool) -> Check:
    from pipelines.mlflow_server import registry_target
    from tradeloom.adapters.registry import load_scorer
    from tradeloom.features.spec import DEFAULT_SPEC

    try:
        loaded, _ = load_scorer(registry_target(db.settings), name, DEFAULT_SPEC.names, DEFAULT_SPEC.spec_hash())
        return Check("champion", True, f"{name} v{loaded.version} ({loaded.card.kind}) loads and matches feature "
                                       f"spec {DEFAULT_SPEC.spec_hash()[:12]}")
    except Exception as error:
        detail = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        return Check("champion", not required, detail if required else f"not required: {detail}")


def _broker_token(settings: PremarketSettings, now: datetime) -> Check:
    if settings.broker == "paper":
        return Check("broker_session", True, "paper broker: no session token needed")
    path = settings.token_file
    if path is None:
        return Check("broker_session", False, f"broker={settings.broker} but TRADELOOM_PREMARKET_TOKEN_FILE is unset")
    try:
        login_at = datetime.fromisoformat(json.loads(path.read_text(encoding="utf-8"))["login_at"])
    except (OSError, ValueError, KeyError) as error:
        return Check("broker_session", False, f"token file {path}: unreadable ({type(error).__name__})")
    local = now.astimezone(NSE_TZ)
    rollover = datetime.combine(local.date(), KITE_TOKEN_ROLLOVER, NSE_TZ)
    if local < rollover:
        rollover -= timedelta(days=1)
    if login_at.tzinfo is None or login_at < rollover:
        return Check("broker_session", False, f"token from {login_at.isoformat()} predates today's rollover "
                                              f"{rollover.isoformat()}: log in again")
    return Check("broker_session", True, f"token from {login_at.isoformat()}")


def write_health(health_dir: Path, payload: dict[str, Any]) -> Path:
    """Atomic replace, so the executor never reads half a file."""
    health_dir.mkdir(parents=True, exist_ok=True)
    path = health_dir / HEALTH_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)
    return path


def run_checks(db: Database, session_day: date, settings: PremarketSettings | None = None,
               health_dir: Path | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Every check, the health file written; builtins: {status, session_date, checks, health_file}."""
    settings = settings or PremarketSettings()
    now = now or datetime.now(UTC)
    checks = [_database(db), _instruments(db, settings.min_instruments), _mlflow(db),
              _champion(db, settings.registered_model, settings.require_champion), _broker_token(settings, now)]
    status = "green" if all(check.ok for check in checks) else "red"
    payload: dict[str, Any] = {"status": status, "session_date": session_day.isoformat(), "checked_at": now.isoformat(),
                               "checks": {check.name: check.as_dict() for check in checks}}
    path = write_health(health_dir or settings.health_dir or db.settings.home / "health", payload)
    payload["health_file"] = str(path)
    log.info("premarket %s for %s: %s", status, session_day, {c.name: c.ok for c in checks})
    return payload


def read_health(health_dir: Path, session_day: date) -> dict[str, Any]:
    """For the executor: the health record, refusing a missing, stale or red one."""
    path = health_dir / HEALTH_FILE
    try:
        payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"health file {path}: unreadable ({error}); run the premarket DAG first") from error
    if payload.get("session_date") != session_day.isoformat():
        raise ConfigError(f"health file {path}: session_date={payload.get('session_date')!r}, expected "
                          f"{session_day.isoformat()}")
    if payload.get("status") != "green":
        failed = [name for name, check in payload.get("checks", {}).items() if not check.get("ok")]
        raise ConfigError(f"health file {path}: status={payload.get('status')!r} (failed: {failed}); expected green")
    return payload

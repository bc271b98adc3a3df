"""Pre-market checks: is today a session on the exchange calendar; is the broker session alive (an
authenticated call to the broker, not the token file's date) and is the instrument master refreshed from
the broker; are the database, MLflow and the `@champion` model (loadable, same feature spec as the online
engine) usable.

The broker part (`broker_checks`) needs the broker SDKs, so the DAG runs it in the live venv and hands
its verdicts to `run_checks` in the ML venv. The result is written atomically to
`.loom/health/premarket.json`; the executor refuses to start unless that file is green and dated for the
session it is about to trade.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.broker_connection import BrokerSettings, connect, load_broker_settings
from tradeloom.adapters.db import Database
from tradeloom.errors import ConfigError
from tradeloom.settings import project_root

log = logging.getLogger(__name__)
HEALTH_FILE = "premarket.json"
NSE_TZ = ZoneInfo("Asia/Kolkata")
BROKER_CHECKS = ("broker_session", "instrument_refresh")


class PremarketSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRADELOOM_PREMARKET_", env_file=".env", extra="ignore")

    # exchange_calendars code: XBOM (BSE) shares the NSE equity holiday list.
    calendar: str = "XBOM"
    registered_model: str = "tradeloom-direction_daily"
    # The broker and its credentials: `BrokerSettings` (TRADELOOM_BROKER_NAME, TRADELOOM_BROKER_KITE__...).
    require_champion: bool = True
    min_instruments: int = Field(default=1, ge=0)
    health_dir: Path | None = None  # default: <home>/health, where the executor looks


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)  # counts and the like, kept in the health file

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, **({"data": self.data} if self.data else {})}

    @staticmethod
    def from_dict(name: str, payload: Mapping[str, Any]) -> Check:
        return Check(name, bool(payload.get("ok")), str(payload.get("detail", "")), dict(payload.get("data") or {}))


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


def _reason(error: BaseException, secrets: Sequence[str]) -> str:
    """One line naming the error; any credential that slipped into the text is masked."""
    text = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _secret_values(settings: BrokerSettings) -> list[str]:
    values: list[str] = []
    for config in (settings.kite, settings.fyers):
        if config is None:
            continue
        for name in ("api_secret", "secret_key", "access_token"):
            secret = getattr(config, name, None)
            if secret is not None:
                values.append(secret.get_secret_value())
    return values


def broker_checks(db: Database, broker_settings: BrokerSettings | None = None) -> list[Check]:
    """Is the broker session alive (an authenticated call to the broker) and the instrument master
    refreshed from it. Needs the broker SDKs (live venv). Every failure is a red check, never a crash."""
    try:
        settings = broker_settings or load_broker_settings()
    except ConfigError as error:
        return [Check("broker_session", False, _reason(error, [])),
                Check("instrument_refresh", False, "skipped: broker settings invalid")]
    if settings.name == "paper":
        return [Check("broker_session", True, "paper broker: not needed"),
                Check("instrument_refresh", True, "paper broker: not needed")]
    secrets = _secret_values(settings)
    try:
        broker = connect(settings)
        profile = broker.profile()
    except ImportError as error:
        return [Check("broker_session", False, f"{settings.name} SDK not importable here ({error.name}); the broker "
                                               "checks run in the live venv (.loom/venv-live)"),
                Check("instrument_refresh", False, "skipped: no broker SDK")]
    except Exception as error:  # the finding: expired token, unreachable broker, bad credentials
        return [Check("broker_session", False, f"{settings.name} session check failed: {_reason(error, secrets)}"),
                Check("instrument_refresh", False, "skipped: no valid broker session")]
    session = Check("broker_session", True, f"{settings.name} session valid (user {profile['user_id']})")
    from pipelines.instrument_master import refresh_instrument_master

    try:
        result = refresh_instrument_master(db, broker, settings)
    except Exception as error:
        return [session, Check("instrument_refresh", False, f"refresh failed: {_reason(error, secrets)}")]
    detail = (f"{result.listed} listed by {settings.name}: {result.inserted} inserted, {result.updated} updated, "
              f"{result.unchanged} unchanged")
    if result.missing:
        detail += f"; universe keys not listed: {result.missing}"
    return [session, Check("instrument_refresh", result.listed > 0 and not result.missing, detail, result.as_dict())]


SDK_MODULES = {"kite": "kiteconnect", "fyers": "fyers_apiv3"}
LIVE_RESULT = "PREMARKET-BROKER-JSON "


def live_python() -> Path:
    return Path(os.environ.get("TRADELOOM_LIVE_PYTHON", project_root() / ".loom" / "venv-live" / "bin" / "python"))


def broker_checks_anywhere(db: Database, session_day: date) -> list[Check]:
    """`broker_checks` here when this interpreter has the broker's SDK, else in the live venv (the CLI
    and the ML venv have no broker SDKs); same environment, so the same settings and database."""
    try:
        settings = load_broker_settings()
    except ConfigError:
        return broker_checks(db)  # reports the settings error as a red check
    module = SDK_MODULES.get(settings.name)
    if module is None or importlib.util.find_spec(module) is not None:
        return broker_checks(db, settings)
    code = ("import json, sys\nfrom pipelines.jobs import premarket_broker\n"
            f"print({LIVE_RESULT!r} + json.dumps(premarket_broker(sys.argv[1])))")
    try:
        done = subprocess.run([str(live_python()), "-c", code, session_day.isoformat()], cwd=project_root(),
                              capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return [Check("broker_session", False, f"live venv {live_python()} not runnable: {_reason(error, [])}"),
                Check("instrument_refresh", False, "skipped: no live venv")]
    lines = [line for line in done.stdout.splitlines() if line.startswith(LIVE_RESULT)]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        for secret in _secret_values(settings):
            last = last.replace(secret, "***") if secret else last
        return [Check("broker_session", False, f"broker step in the live venv exited {done.returncode}: {last}"),
                Check("instrument_refresh", False, "skipped: broker step failed")]
    result = json.loads(lines[-1].removeprefix(LIVE_RESULT))["checks"]
    return [Check.from_dict(name, result.get(name, {"ok": False, "detail": "missing from the live venv's result"}))
            for name in BROKER_CHECKS]


def write_health(health_dir: Path, payload: dict[str, Any]) -> Path:
    """Atomic replace, so the executor never reads half a file."""
    health_dir.mkdir(parents=True, exist_ok=True)
    path = health_dir / HEALTH_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)
    return path


def run_checks(db: Database, session_day: date, settings: PremarketSettings | None = None,
               health_dir: Path | None = None, now: datetime | None = None,
               broker: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Every check, the health file written; builtins: {status, session_date, checks, health_file}.
    `broker`: the live venv's `broker_checks` verdicts by name; when None they are run here."""
    settings = settings or PremarketSettings()
    now = now or datetime.now(UTC)
    if broker is None:
        from_broker = broker_checks_anywhere(db, session_day)
    else:
        from_broker = [Check.from_dict(name, broker[name]) if name in broker else
                       Check(name, False, "missing from the broker step's result") for name in BROKER_CHECKS]
    # The refresh runs first (the DAG's broker step), so the count below sees today's master.
    checks = [*from_broker, _database(db), _instruments(db, settings.min_instruments), _mlflow(db),
              _champion(db, settings.registered_model, settings.require_champion)]
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

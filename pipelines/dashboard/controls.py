"""The emergency controls: write the executor's control file, then journal who pressed it and when.

The file comes first because it is what stops trading (the executor checks it every bar, even while the
database is down); a failed journal write is reported, never allowed to block the control.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import psycopg2

from pipelines.dashboard.settings import DashboardSettings
from tradeloom.adapters.db import Database
from tradeloom.errors import DatabaseUnavailableError

log = logging.getLogger(__name__)


class Control(StrEnum):
    KILL = "kill"
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True)
class ControlResult:
    control: Control
    strategy: str
    file: Path
    actor: str
    at: datetime
    journaled: bool
    journal_error: str = ""


def _write_file(path: Path, text: str) -> None:
    """Atomic replace: the executor never reads a half-written kill file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def apply_control(settings: DashboardSettings, db: Database, strategy: str, control: Control, actor: str,
                  reason: str, client: str) -> ControlResult:
    at = datetime.now(tz=UTC)
    reason = reason.strip()[:200] or "operator"
    if control is Control.KILL:
        path = settings.kill_switch_path(strategy)
        _write_file(path, f"{reason} by {actor} at {at.isoformat()}\n")
        row, engaged, kind = "kill_switch", True, "kill_switch"
    elif control is Control.PAUSE:
        path = settings.pause_path(strategy)
        _write_file(path, f"{reason} by {actor} at {at.isoformat()}\n")
        row, engaged, kind = "pause_entries", True, "pause_entries"
    else:
        # Resume releases the pause only: a running executor keeps its kill switch until it is restarted
        # and `tradeloom executor resume` removes the kill file (a deliberate, separate act).
        path = settings.pause_path(strategy)
        path.unlink(missing_ok=True)
        row, engaged, kind = "pause_entries", False, "resume_entries"
    log.warning("dashboard control %s for strategy %s by %s (%s): %s", control.value, strategy, actor, client, path)
    detail = json.dumps({"reason": reason, "strategy": strategy, "file": str(path), "client": client,
                         "source": "dashboard"})
    try:
        with db.transaction(db.settings.writer_role) as conn, conn.cursor() as cur:
            cur.execute(
                "insert into executor_controls (control, engaged, actor, reason, updated_at)"
                " values (%s, %s, %s, %s, %s) on conflict (control) do update set engaged = excluded.engaged,"
                " actor = excluded.actor, reason = excluded.reason, updated_at = excluded.updated_at",
                (row, engaged, actor, reason, at))
            cur.execute("insert into executor_events (event_key, kind, actor, detail, event_at)"
                        " values (%s, %s, %s, %s, %s)", (uuid.uuid4().hex, kind, actor, detail, at))
    except (psycopg2.Error, DatabaseUnavailableError) as error:
        message = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        log.error("control %s applied (%s) but not journaled: %s", control.value, path, message)
        return ControlResult(control, strategy, path, actor, at, journaled=False, journal_error=message)
    return ControlResult(control, strategy, path, actor, at, journaled=True)

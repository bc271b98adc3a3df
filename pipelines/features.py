"""Feature building: runs the dbt project (staging -> intermediate -> marts) with the feature spec, and
reads features + labels back as numpy arrays for training."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import numpy.typing as npt

from tradeloom.adapters.db import Database
from tradeloom.errors import ConfigError, DataQualityError, InputError
from tradeloom.features.spec import DEFAULT_SPEC, FeatureSpec
from tradeloom.settings import project_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureBuildResult:
    success: bool
    full_refresh: bool
    spec_hash: str
    nodes: dict[str, str]
    feature_rows: int
    label_rows: int
    seconds: float
    docs_path: str | None = None

    def summary(self) -> str:
        failed = sorted(node for node, status in self.nodes.items() if status not in ("success", "pass"))
        state = "ok" if self.success else f"FAILED ({', '.join(failed)})"
        return (f"features {state}: {self.feature_rows} feature rows, {self.label_rows} label rows, "
                f"{len(self.nodes)} dbt nodes in {self.seconds:.1f}s, spec {self.spec_hash[:12]}")


@dataclass(frozen=True)
class FeatureMatrix:
    """Features and labels for one timeframe, rows ordered by (instrument_id, bar_at)."""

    names: tuple[str, ...]
    spec_hash: str
    instrument_id: npt.NDArray[np.int64]
    bar_at_ns: npt.NDArray[np.int64]
    features: npt.NDArray[np.float64]
    forward_return: npt.NDArray[np.float64]
    direction: npt.NDArray[np.float64]


def dbt_paths(db: Database) -> tuple[Path, Path]:
    """Target and log directories, private per database so parallel test runs never share them."""
    base = db.settings.home / "dbt" / db.settings.database_name
    return base / "target", base / "logs"


def dbt_environment(db: Database) -> dict[str, str]:
    """The TRADELOOM_DBT_* variables profiles.yml reads, for the local cluster or DATABASE_URL."""
    if db.settings.database_url is None:
        cluster = db.cluster
        return {"TRADELOOM_DBT_HOST": str(cluster.socket_dir), "TRADELOOM_DBT_PORT": str(cluster.port),
                "TRADELOOM_DBT_USER": db.settings.owner_role, "TRADELOOM_DBT_PASSWORD": "",
                "TRADELOOM_DBT_DBNAME": db.settings.database_name}
    parts = urlsplit(db.settings.database_url)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["127.0.0.1"])[0]
    return {"TRADELOOM_DBT_HOST": host, "TRADELOOM_DBT_PORT": str(parts.port or query.get("port", ["5432"])[0]),
            "TRADELOOM_DBT_USER": unquote(parts.username or db.settings.owner_role),
            "TRADELOOM_DBT_PASSWORD": unquote(parts.password or ""),
            "TRADELOOM_DBT_DBNAME": parts.path.lstrip("/") or db.settings.database_name}


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def spec_vars(spec: FeatureSpec = DEFAULT_SPEC, **extra: object) -> dict[str, object]:
    payload = spec.payload()
    payload["spec_hash"] = spec.spec_hash()
    return {"feature_spec": payload, **extra}


def run_dbt(db: Database, args: Sequence[str], variables: dict[str, object]) -> dict[str, str]:
    """One dbt command in-process; returns {node unique_id: status}. Raises DataQualityError when a dbt
    test fails and ConfigError when dbt itself cannot run."""
    from dbt.cli.main import dbtRunner  # heavy: imported only when dbt runs

    target, logs = dbt_paths(db)
    root = project_root(Path(__file__).parent)
    command = [*args, "--project-dir", str(root), "--profiles-dir", str(root), "--target-path", str(target),
               "--log-path", str(logs), "--vars", json.dumps(variables), "--quiet"]
    with _environment(dbt_environment(db)):
        result = dbtRunner().invoke(command)
    nodes: dict[str, str] = {}
    for node_result in getattr(result.result, "results", None) or []:
        nodes[str(node_result.node.unique_id)] = str(node_result.status)
    if result.exception is not None:
        raise ConfigError(f"dbt {args[0]} could not run: {result.exception}") from result.exception
    if not result.success:
        failed = {node: status for node, status in nodes.items() if status not in ("success", "pass")}
        raise DataQualityError(f"dbt {args[0]} failed: {failed or 'see ' + str(logs)}")
    return nodes


def _count(db: Database, table: str) -> int:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(f"select count(*) from {table}")
        row = cur.fetchone()
    return int(row[0]) if row else 0


def _needs_rebuild(db: Database) -> bool:
    """A features table built before the resumable recursions lacks their state: only a full build fills it."""
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select exists (select 1 from information_schema.tables where table_name = 'features'), "
                    "exists (select 1 from information_schema.columns where table_name = 'features' "
                    "and column_name = 'state__bar_number')")
        row = cur.fetchone()
    return bool(row and row[0] and not row[1])


def build_features(
    db: Database, *, full_refresh: bool = False, start: datetime | None = None, end: datetime | None = None,
    spec: FeatureSpec = DEFAULT_SPEC, enforce_data_gate: bool = True,
    timeframes: Sequence[str] | None = None, run_tests: bool = True,
) -> FeatureBuildResult:
    """Build staging -> intermediate -> marts. Incremental by default: each series is extended from its
    last built bar; with start/end only that window of the marts is rewritten."""
    if start is not None and end is not None and start >= end:
        raise InputError(f"start={start.isoformat()} must be before end={end.isoformat()}")
    started = time.perf_counter()
    variables = spec_vars(spec, enforce_data_gate=enforce_data_gate,
                          start=start.isoformat() if start else None, end=end.isoformat() if end else None)
    if timeframes is not None:
        variables["feature_timeframes"] = list(timeframes)
    args = ["build" if run_tests else "run"]
    if not full_refresh and _needs_rebuild(db):
        log.warning("features table predates the stored recursion state (state__bar_number): full refresh")
        full_refresh = True
    if full_refresh:
        args.append("--full-refresh")
    nodes = run_dbt(db, args, variables)
    result = FeatureBuildResult(
        success=True, full_refresh=full_refresh, spec_hash=spec.spec_hash(), nodes=nodes,
        feature_rows=_count(db, "features"), label_rows=_count(db, "labels"),
        seconds=time.perf_counter() - started,
    )
    log.info("%s", result.summary())
    return result


def generate_docs(db: Database, spec: FeatureSpec = DEFAULT_SPEC) -> Path:
    """`dbt docs generate` into the dbt target directory under .loom/; returns the index.html path."""
    run_dbt(db, ["docs", "generate"], spec_vars(spec))
    return dbt_paths(db)[0] / "index.html"


def feature_matrix(
    db: Database, *, timeframe: str, instrument_ids: Sequence[int] | None = None,
    start: datetime | None = None, end: datetime | None = None, spec: FeatureSpec = DEFAULT_SPEC,
) -> FeatureMatrix:
    """Features and labels of one timeframe as arrays (NaN for SQL NULL); refuses a table built from a
    different spec."""
    columns = ", ".join(f"f.{name}" for name in spec.names)
    where = ["f.timeframe = %s"]
    params: list[object] = [timeframe]
    if instrument_ids is not None:
        where.append("f.instrument_id = any(%s)")
        params.append(list(instrument_ids))
    if start is not None:
        where.append("f.bar_at >= %s")
        params.append(start)
    if end is not None:
        where.append("f.bar_at < %s")
        params.append(end)
    sql = (f"select f.instrument_id, (extract(epoch from f.bar_at) * 1e6)::bigint, f.spec_hash, {columns}, "
           "l.forward_return, l.direction from features f left join labels l using (instrument_id, timeframe, bar_at) "
           f"where {' and '.join(where)} order by f.instrument_id, f.bar_at")
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    hashes = {row[2] for row in rows}
    if hashes and hashes != {spec.spec_hash()}:
        raise ConfigError(f"features table spec_hash={sorted(hashes)} differs from the spec's {spec.spec_hash()}: "
                          "rebuild with `tradeloom features build --full-refresh`")
    width = len(spec.names)
    values = np.array([[np.nan if value is None else value for value in row[3:]] for row in rows],
                      dtype=np.float64).reshape(len(rows), width + 2)
    return FeatureMatrix(
        names=spec.names, spec_hash=spec.spec_hash(),
        instrument_id=np.array([row[0] for row in rows], dtype=np.int64),
        bar_at_ns=np.array([row[1] for row in rows], dtype=np.int64) * 1000,
        features=values[:, :width], forward_return=values[:, width], direction=values[:, width + 1],
    )


def demo_build(db: Database) -> str:
    """Build features over whatever passed the data gate; one summary line for `tradeloom demo`."""
    result = build_features(db)
    return result.summary()

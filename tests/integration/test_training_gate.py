"""Training data never includes a day the data gate failed (before the feature marts are built as after)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.ingest import ingest
from pipelines.training_data import _bars, _instrument_id
from tradeloom.adapters.db import Database
from tradeloom.adapters.sources import synthetic_batch
from tradeloom.errors import DataQualityError

DAY_NS = 86_400 * 1_000_000_000


def _fail_days(db: Database, days: list[int]) -> None:
    with db.transaction(db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("insert into validation_runs (target_table, status) values ('bars_1m', 'failed')"
                    " returning validation_run_id")
        run = cur.fetchone()[0]  # type: ignore[index]
        for day in days:
            cur.execute("insert into data_gate (target_table, instrument_id, day, status, validation_run_id)"
                        " select 'bars_1m', instrument_id, date '1970-01-01' + %s, 'failed', %s from instruments",
                        (day, run))


def test_bars_on_a_day_the_gate_failed_are_left_out_of_the_training_data(clean_db: Database) -> None:
    batch = synthetic_batch(1, 3, seed=7)
    ingest(batch, clean_db, register_instruments=True)
    key = str(batch.bars.instrument_key[0])
    days = sorted({int(stamp) // DAY_NS for stamp in batch.bars.bar_at.tolist()})
    assert len(days) == 3
    _fail_days(clean_db, [days[1]])
    bars = _bars(clean_db, _instrument_id(clean_db, key), "1m")
    kept_days = set((bars["bar_at"] // DAY_NS).tolist())
    assert kept_days == {days[0], days[2]}
    assert len(bars["close"]) == int(np.count_nonzero(batch.bars.bar_at // DAY_NS != days[1]))
    _fail_days(clean_db, [days[0], days[2]])
    with pytest.raises(DataQualityError, match=r"every 1m bar of instrument_id .* the data gate failed"):
        _bars(clean_db, _instrument_id(clean_db, key), "1m")

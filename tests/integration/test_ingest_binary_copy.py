"""Binary COPY of bars: the stream follows the documented format and values land bit for bit."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from pipelines.ingest import ingest
from tradeloom.adapters import pg_copy
from tradeloom.adapters.db import Database
from tradeloom.adapters.pg_copy import BarCopyStream
from tradeloom.adapters.sources import SourceBatch, synthetic_batch
from tradeloom.errors import InputError
from tradeloom.quality import BarColumns

AWKWARD = np.array([0.1 + 0.2, 1 / 3, 123456.78901234567, 5e-324, 2.2250738585072014e-308, 1e300, 7.0, 0.07])


def _awkward_batch(days: int = 1) -> SourceBatch:
    batch = synthetic_batch(2, days, seed=11)
    bars = batch.bars
    n = len(bars)
    scale = np.resize(AWKWARD, n)
    # Prices keep high >= max(open, close) >= min(open, close) >= low > 0 so no row is quarantined.
    low = scale
    open_ = np.nextafter(low, np.inf)
    close = np.nextafter(open_, np.inf)
    high = np.nextafter(close, np.inf)
    volume = np.resize(np.array([0.0, 1.5, 1e15 + 0.5, 3.141592653589793]), n)
    stamps = bars.bar_at + np.resize(np.array([0, 1_000, 999_999_000, 123_456_000]), n)  # microsecond offsets
    return SourceBatch(batch.source, batch.timeframe,
                       BarColumns(bars.instrument_key, stamps, open_, high, low, close, volume),
                       instruments=batch.instruments)


def _stored(db: Database) -> dict[tuple[str, int], tuple[float, ...]]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(
            "select i.exchange || ':' || i.symbol, (extract(epoch from b.bar_at) * 1000000)::bigint,"
            " b.open, b.high, b.low, b.close, b.volume from bars_1m b join instruments i using (instrument_id)"
        )
        return {(key, int(micros)): tuple(values) for key, micros, *values in cur.fetchall()}


def _expected(batch: SourceBatch) -> dict[tuple[str, int], tuple[float, ...]]:
    bars = batch.bars
    return {
        (str(bars.instrument_key[i]), int(bars.bar_at[i] // 1000)):
            (float(bars.open[i]), float(bars.high[i]), float(bars.low[i]), float(bars.close[i]),
             float(bars.volume[i]))
        for i in range(len(bars))
    }


def _bits(values: dict[tuple[str, int], tuple[float, ...]]) -> dict[tuple[str, int], tuple[bytes, ...]]:
    return {key: tuple(struct.pack(">d", v) for v in row) for key, row in values.items()}


def test_ingest_binary_copy_awkward_floats_round_trip_bit_for_bit(clean_db: Database) -> None:
    batch = _awkward_batch()
    report = ingest(batch, clean_db, register_instruments=True)
    assert report.inserted == len(batch.bars) and report.quarantined == 0
    assert _bits(_stored(clean_db)) == _bits(_expected(batch))


def test_ingest_binary_copy_staged_upsert_many_blocks_round_trips(
    clean_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_copy, "BLOCK_ROWS", 37)  # many blocks, and a short last one
    first = synthetic_batch(2, 1, seed=12)
    ingest(first, clean_db, register_instruments=True)
    batch = _awkward_batch()  # same keys as `first`: goes through staging + upsert
    report = ingest(batch, clean_db)
    # Every 4th awkward row keeps its synthetic timestamp (an update); the others are new keys.
    same_key = (len(batch.bars) + 3) // 4
    assert (report.inserted, report.updated) == (len(batch.bars) - same_key, same_key)
    stored = _stored(clean_db)
    assert len(stored) == len(first.bars) + report.inserted
    expected = _expected(batch)
    assert _bits({key: stored[key] for key in expected}) == _bits(expected)


def _decode(stream: bytes) -> list[tuple[object, ...]]:
    """Independent reader of the COPY BINARY format (PostgreSQL docs, COPY, 'Binary Format')."""
    assert stream[:11] == b"PGCOPY\n\xff\r\n\x00"
    flags, extension = struct.unpack_from(">ii", stream, 11)
    assert (flags, extension) == (0, 0)
    offset = 19
    rows: list[tuple[object, ...]] = []
    while True:
        (fields,) = struct.unpack_from(">h", stream, offset)
        offset += 2
        if fields == -1:
            assert offset == len(stream)
            return rows
        values: list[bytes] = []
        for _ in range(fields):
            (length,) = struct.unpack_from(">i", stream, offset)
            values.append(stream[offset + 4:offset + 4 + length])
            offset += 4 + length
        rows.append((
            struct.unpack(">i", values[0])[0], struct.unpack(">q", values[1])[0],
            *(struct.unpack(">d", value)[0] for value in values[2:7]),
            values[7].decode("utf-8"), struct.unpack(">q", values[8])[0],
        ))


def test_bar_copy_stream_small_reads_decode_to_the_input_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_copy, "BLOCK_ROWS", 5)
    batch = _awkward_batch()
    bars = batch.bars
    ids = np.arange(1, len(bars) + 1, dtype=np.int64)
    sent: list[int] = []
    stream = BarCopyStream(bars, ids, "file:bärs.csv", 77, progress=sent.append)
    parts = []
    while part := stream.read(13):
        parts.append(part)
    data = b"".join(parts)
    assert sum(sent) == len(data)
    pg_epoch_us = 946_684_800 * 1_000_000
    assert _decode(data) == [
        (int(ids[i]), int(bars.bar_at[i] // 1000) - pg_epoch_us, float(bars.open[i]), float(bars.high[i]),
         float(bars.low[i]), float(bars.close[i]), float(bars.volume[i]), "file:bärs.csv", 77)
        for i in range(len(bars))
    ]


def test_bar_copy_stream_id_outside_integer_column_raises() -> None:
    bars = synthetic_batch(1, 1, seed=1).bars
    ids = np.full(len(bars), 2**31, dtype=np.int64)
    with pytest.raises(InputError, match="instrument_id"):
        BarCopyStream(bars, ids, "x", 1)

"""PostgreSQL binary COPY of bar rows, encoded with numpy and streamed to the server in blocks.

Binary COPY carries float8 as its 8 IEEE bytes, so prices round-trip exactly with no text formatting on
our side and no float parsing on the server's; the numpy record layout below is the documented COPY
BINARY tuple format (field count, then length + big-endian value per field).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt

from tradeloom.errors import InputError
from tradeloom.quality import BarColumns

# Signature, flags (no OIDs), header extension length: https://www.postgresql.org/docs/15/sql-copy.html
COPY_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
COPY_BINARY_TRAILER = (-1).to_bytes(2, "big", signed=True)
# timestamptz travels as microseconds since 2000-01-01 00:00 UTC.
PG_EPOCH_US = 946_684_800_000_000
BAR_COPY_COLUMNS = "instrument_id, bar_at, open, high, low, close, volume, source, ingest_batch_id"
_PRICE_FIELDS = ("open", "high", "low", "close", "volume")
_INT4_MAX = 2**31 - 1
# Rows per encoded block: big enough that numpy dominates, small enough (~7 MB) that the server is
# already inserting block k while we encode block k+1.
BLOCK_ROWS = 65_536


def bar_record_dtype(source_bytes: int) -> np.dtype[np.void]:
    """One COPY BINARY tuple of the bars tables, packed (no padding), big-endian."""
    fields: list[tuple[str, str]] = [("fields", ">i2"), ("id_len", ">i4"), ("instrument_id", ">i4"),
                                     ("bar_at_len", ">i4"), ("bar_at", ">i8")]
    for name in _PRICE_FIELDS:
        fields += [(f"{name}_len", ">i4"), (name, ">f8")]
    fields += [("source_len", ">i4"), ("source", f"S{source_bytes}"), ("batch_len", ">i4"), ("batch", ">i8")]
    return np.dtype(fields)


def encode_bar_rows(
    bars: BarColumns, ids: npt.NDArray[np.int64], source: bytes, batch_id: int, start: int, stop: int
) -> bytes:
    """Tuples for rows [start, stop) in BAR_COPY_COLUMNS order (no header or trailer)."""
    records = np.empty(stop - start, dtype=bar_record_dtype(len(source)))
    records["fields"] = 9
    records["id_len"] = 4
    records["instrument_id"] = ids[start:stop]
    records["bar_at_len"] = 8
    # Floor to the microsecond, as timestamptz stores it.
    records["bar_at"] = bars.bar_at[start:stop] // 1000 - PG_EPOCH_US
    for name in _PRICE_FIELDS:
        records[f"{name}_len"] = 8
        records[name] = getattr(bars, name)[start:stop]
    records["source_len"] = len(source)
    records["source"] = source
    records["batch_len"] = 8
    records["batch"] = batch_id
    return records.tobytes()


def _blocks(bars: BarColumns, ids: npt.NDArray[np.int64], source: bytes, batch_id: int) -> Iterator[bytes]:
    yield COPY_BINARY_HEADER
    for start in range(0, len(ids), BLOCK_ROWS):
        yield encode_bar_rows(bars, ids, source, batch_id, start, min(len(ids), start + BLOCK_ROWS))
    yield COPY_BINARY_TRAILER


class BarCopyStream(io.RawIOBase):
    """A file-like COPY source that encodes the next block only when the server has taken the last one,
    so encoding overlaps the server's inserting; reports bytes handed over for progress bars."""

    def __init__(
        self,
        bars: BarColumns,
        ids: npt.NDArray[np.int64],
        source: str,
        batch_id: int,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        if len(ids) != len(bars):
            raise InputError(f"instrument ids: {len(ids)} values for {len(bars)} bars; expected one per bar")
        if len(ids) and (int(ids.min()) < 1 or int(ids.max()) > _INT4_MAX):
            raise InputError(
                f"instrument_id range {int(ids.min())}..{int(ids.max())} does not fit the integer column"
            )
        encoded = source.encode("utf-8")
        if b"\x00" in encoded:
            raise InputError(f"source name {source!r} must not contain NUL characters")
        self._blocks = _blocks(bars, ids, encoded, batch_id)
        self._pending = memoryview(b"")
        self._progress = progress

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            block = next(self._blocks, None)
            if block is None:
                return b""
            self._pending = memoryview(block)
        end = len(self._pending) if size is None or size < 0 else size
        chunk = bytes(self._pending[:end])
        self._pending = self._pending[end:]
        if self._progress is not None:
            self._progress(len(chunk))
        return chunk

-- bars_1m takes bulk loads of a million rows at a time. TimescaleDB's default (bar_at desc) index costs
-- ~2.5 s of server CPU and ~70 MB of WAL per million rows (bench/ingest.py, issue 2) and serves no query:
-- per-instrument reads use the primary key (instrument_id, bar_at), and time-range reads over all
-- instruments are bounded by chunk exclusion to a few 7-day chunks that are read whole anyway.
drop index if exists bars_1m_bar_at_idx;

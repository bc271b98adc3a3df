-- Per-instrument overrides of the data gate's tolerances (defaults per raw table live in
-- pipelines/validate_frames.py, measured on the bundled real data and the synthetic generator).
-- Real feeds differ: an illiquid stock misses minutes, FX closes over Christmas, a daily series
-- crosses stock splits and crashes.
create table quality_tolerances (
    target_table            text not null
        check (target_table in ('bars_1m', 'bars_1h', 'bars_1d', 'order_book_snapshots')),
    instrument_id           integer not null references instruments (instrument_id) on delete cascade,
    -- longest run of consecutive expected bars (minutes for order books) that may be missing
    max_missing_bars        integer not null check (max_missing_bars >= 0),
    -- expected bars that may be due after the last one received before the data counts as stale
    max_stale_bars          integer not null check (max_stale_bars >= 0),
    -- a return further than this many robust (MAD-scaled) deviations from the median is a jump
    jump_robust_deviations  double precision not null check (jump_robust_deviations > 0),
    updated_at              timestamptz not null default now(),
    primary key (target_table, instrument_id)
);
comment on table quality_tolerances is 'Data-gate tolerances per (raw table, instrument), overriding the defaults.';

grant select, insert, update, delete on quality_tolerances to tradeloom_writer;
grant select on quality_tolerances to tradeloom_executor;

-- Depth snapshots, 5 levels each side (level 1 = best). Prices and sizes as arrays of length 5.
create table order_book_snapshots (
    instrument_id    integer not null references instruments (instrument_id),
    snapshot_at      timestamptz not null,
    bid_prices       double precision[] not null check (cardinality(bid_prices) = 5),
    bid_sizes        double precision[] not null check (cardinality(bid_sizes) = 5),
    ask_prices       double precision[] not null check (cardinality(ask_prices) = 5),
    ask_sizes        double precision[] not null check (cardinality(ask_sizes) = 5),
    source           text not null,
    ingest_batch_id  bigint,
    primary key (instrument_id, snapshot_at)
);
select create_hypertable('order_book_snapshots', 'snapshot_at', chunk_time_interval => interval '1 day');

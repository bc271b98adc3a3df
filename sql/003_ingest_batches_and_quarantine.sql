create table ingest_batches (
    ingest_batch_id   bigserial primary key,
    source            text not null,
    target_table      text not null,
    range_start_at    timestamptz,
    range_end_at      timestamptz,
    rows_received     integer not null default 0,
    rows_inserted     integer not null default 0,
    rows_updated      integer not null default 0,
    rows_unchanged    integer not null default 0,
    rows_quarantined  integer not null default 0,
    checksum          text,
    status            text not null check (status in ('committed', 'failed')),
    error             text,
    started_at        timestamptz not null default now(),
    finished_at       timestamptz
);

create table quarantine (
    quarantine_id    bigserial primary key,
    ingest_batch_id  bigint references ingest_batches (ingest_batch_id),
    target_table     text not null,
    reason           text not null,
    raw_row          jsonb not null,
    quarantined_at   timestamptz not null default now()
);
create index quarantine_batch_idx on quarantine (ingest_batch_id);

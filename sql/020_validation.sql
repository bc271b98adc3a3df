-- The data gate: nothing downstream (features, training, trading) consumes an (instrument, UTC day)
-- of a raw table unless a validation run has marked it passed.
create table validation_runs (
    validation_run_id  bigserial primary key,
    target_table       text not null,
    range_start_at     timestamptz,
    range_end_at       timestamptz,
    ingest_batch_id    bigint references ingest_batches (ingest_batch_id),
    status             text not null check (status in ('passed', 'failed')),
    expectations       jsonb not null default '[]'::jsonb,
    rows_checked       integer not null default 0,
    rows_failed        integer not null default 0,
    data_docs_path     text,
    started_at         timestamptz not null default now(),
    finished_at        timestamptz
);

create table data_gate (
    target_table       text not null,
    instrument_id      integer not null references instruments (instrument_id),
    day                date not null,
    status             text not null check (status in ('passed', 'failed')),
    validation_run_id  bigint not null references validation_runs (validation_run_id),
    updated_at         timestamptz not null default now(),
    primary key (target_table, instrument_id, day)
);
grant select, insert, update, delete on validation_runs, data_gate to tradeloom_writer;
grant select on validation_runs, data_gate to tradeloom_executor;

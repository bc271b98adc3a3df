-- Monitoring results: one drift run per (strategy, window end) and one daily report per (strategy, day),
-- both upserted so an Airflow retry or a re-run of the same data interval replaces, never duplicates.
create table drift_runs (
    drift_run_id             bigserial primary key,
    strategy                 text not null,
    window_start             timestamptz not null,
    window_end               timestamptz not null,
    reference_start          timestamptz,
    reference_end            timestamptz,
    model_name               text,
    model_version            text,
    status                   text not null check (status in ('green', 'amber', 'red')),
    data_drift_share         double precision,
    drifted_features         text[] not null default '{}',
    prediction_drift_value   double precision,
    rolling_accuracy         double precision,
    information_coefficient  double precision,
    signal_sharpe            double precision,
    decisions_evaluated      integer not null default 0,
    live_slippage_bps        double precision,
    reference_slippage_bps   double precision,
    fill_rate                double precision,
    verdicts                 jsonb not null,  -- check name -> {status, value, threshold, detail}
    report_path              text,
    created_at               timestamptz not null default now(),
    updated_at               timestamptz not null default now(),
    unique (strategy, window_end),
    check (window_start < window_end)
);
create index drift_runs_window_end_idx on drift_runs (window_end desc);

create table daily_reports (
    report_date   date not null,
    strategy      text not null,
    subject       text not null,
    recipients    text[] not null,
    message_path  text not null,
    attachments   text[] not null default '{}',
    sent          boolean not null default false,
    summary       jsonb not null default '{}'::jsonb,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    primary key (report_date, strategy)
);

grant select, insert, update, delete on drift_runs, daily_reports to tradeloom_writer;
grant usage, select on sequence drift_runs_drift_run_id_seq to tradeloom_writer;
grant select on drift_runs, daily_reports to tradeloom_executor;

-- The executor's journal: every decision, order, state change and fill, with lineage. Money columns are
-- numeric (never float). The executor role appends and updates here; it cannot drop or alter anything.
create table decisions (
    decision_id            bigserial primary key,
    strategy               text not null,
    mode                   text not null check (mode in ('backtest', 'paper', 'live', 'shadow', 'replay')),
    bar_at                 timestamptz not null,
    model_name             text,
    model_version          text,
    feature_snapshot_hash  text,
    data_source            text,          -- ingest batch id or live feed name
    record                 jsonb not null, -- signals, confidences, sizes, risk rules that fired and why
    created_at             timestamptz not null default now(),
    unique (strategy, mode, bar_at)
);

create table orders (
    client_order_id         text primary key,
    broker                  text not null,
    broker_order_id         text,
    strategy                text not null,
    mode                    text not null,
    instrument_key          text not null,
    side                    smallint not null check (side in (-1, 1)),
    quantity                integer not null check (quantity > 0),
    filled_quantity         integer not null default 0 check (filled_quantity >= 0),
    order_type              text not null,
    product                 text not null,
    purpose                 text not null,
    limit_price             numeric(20, 8),
    stop_price              numeric(20, 8),
    average_price           numeric(20, 8),
    parent_client_order_id  text,
    state                   text not null,
    status_message          text not null default '',
    unconfirmed             boolean not null default false,  -- sent, outcome unknown: reconcile by client id
    held_for_parent         boolean not null default false,  -- bracket leg waiting for its entry's fill
    bar_at                  timestamptz,
    model_name              text,
    model_version           text,
    feature_snapshot_hash   text,
    created_at              timestamptz not null default now(),
    updated_at              timestamptz not null default now()
);
create index orders_state_idx on orders (state) where state not in ('filled', 'cancelled', 'rejected', 'expired');
create index orders_broker_id_idx on orders (broker, broker_order_id);

create table order_events (
    order_event_id   bigserial primary key,
    event_key        text not null unique,  -- makes replaying the executor's spool idempotent
    client_order_id  text not null references orders (client_order_id),
    state            text not null,
    filled_quantity  integer not null default 0,
    detail           jsonb not null default '{}'::jsonb,
    event_at         timestamptz not null default now()
);
create index order_events_order_idx on order_events (client_order_id);

create table fills (
    fill_id          text primary key,   -- the broker's trade id: a fill is recorded once
    client_order_id  text not null,
    broker           text not null,
    instrument_key   text not null,
    side             smallint not null check (side in (-1, 1)),
    quantity         integer not null check (quantity > 0),
    price            numeric(20, 8) not null check (price > 0),
    fees             numeric(20, 8) not null default 0,
    filled_at        timestamptz not null,
    recorded_at      timestamptz not null default now()
);
create index fills_order_idx on fills (client_order_id);

create table equity_snapshots (
    strategy        text not null,
    mode            text not null,
    snapshot_at     timestamptz not null,
    equity          numeric(20, 4) not null,
    cash            numeric(20, 4) not null,
    gross_exposure  numeric(20, 4) not null,
    net_exposure    numeric(20, 4) not null,
    realized_pnl    numeric(20, 4) not null default 0,
    positions       jsonb not null default '{}'::jsonb,  -- instrument -> {quantity, average_price, mark}
    primary key (strategy, mode, snapshot_at)
);

create table executor_events (
    executor_event_id  bigserial primary key,
    event_key          text not null unique,
    kind               text not null,  -- start, stop, reconcile, kill_switch, pause_entries, model_switch, halt, feed_stale, db_outage
    actor              text not null default 'executor',
    detail             jsonb not null default '{}'::jsonb,
    event_at           timestamptz not null default now()
);

create table executor_controls (
    control     text primary key check (control in ('kill_switch', 'pause_entries')),
    engaged     boolean not null,
    actor       text not null,
    reason      text not null default '',
    updated_at  timestamptz not null default now()
);

grant select, insert, update on decisions, orders, order_events, fills, equity_snapshots, executor_events,
    executor_controls to tradeloom_executor;
grant usage, select on all sequences in schema public to tradeloom_executor;

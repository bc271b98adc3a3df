create table instruments (
    instrument_id   serial primary key,
    exchange        text not null,
    symbol          text not null,
    segment         text not null default 'equity',
    currency        text not null default 'USD',
    tick_size       numeric(18, 8) not null default 0.01 check (tick_size > 0),
    lot_size        integer not null default 1 check (lot_size > 0),
    timezone        text not null default 'America/New_York',
    session_open    time not null default '09:30',
    session_close   time not null default '16:00',
    trading_days    smallint[] not null default '{0,1,2,3,4}',
    calendar        text,
    is_synthetic    boolean not null default false,
    kite_token      bigint,
    fyers_symbol    text,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (exchange, symbol)
);
comment on table instruments is 'Instrument master: one row per (exchange, symbol); broker tokens for Kite and Fyers.';

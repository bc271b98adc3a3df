-- Splits and cash dividends; the dbt intermediate layer back-adjusts every bar before `ex_at`.
-- split_ratio: new shares per old share (2 for a 2-for-1 split); dividend_amount in the bar currency.
create table corporate_actions (
    instrument_id    integer not null references instruments (instrument_id),
    ex_at            timestamptz not null,
    action           text not null check (action in ('split', 'dividend')),
    split_ratio      double precision check (split_ratio > 0),
    dividend_amount  double precision check (dividend_amount >= 0),
    source           text not null default 'manual',
    created_at       timestamptz not null default now(),
    primary key (instrument_id, ex_at, action),
    check ((action = 'split') = (split_ratio is not null)),
    check ((action = 'dividend') = (dividend_amount is not null))
);
comment on table corporate_actions is 'Splits and dividends by ex-date; bars before ex_at are back-adjusted.';
grant select, insert, update, delete on corporate_actions to tradeloom_writer;
grant select on corporate_actions to tradeloom_executor;

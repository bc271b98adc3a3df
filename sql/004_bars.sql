-- Raw bars, one hypertable per timeframe, keyed (instrument_id, bar_at); bar_at is the bar's open, UTC.
create table bars_1m (
    instrument_id    integer not null references instruments (instrument_id),
    bar_at           timestamptz not null,
    open             double precision not null,
    high             double precision not null,
    low              double precision not null,
    close            double precision not null,
    volume           double precision not null,
    source           text not null,
    ingest_batch_id  bigint,
    primary key (instrument_id, bar_at)
);
select create_hypertable('bars_1m', 'bar_at', chunk_time_interval => interval '7 days');

create table bars_1h (like bars_1m including all);
alter table bars_1h add foreign key (instrument_id) references instruments (instrument_id);
select create_hypertable('bars_1h', 'bar_at', chunk_time_interval => interval '90 days');

create table bars_1d (like bars_1m including all);
alter table bars_1d add foreign key (instrument_id) references instruments (instrument_id);
select create_hypertable('bars_1d', 'bar_at', chunk_time_interval => interval '365 days');

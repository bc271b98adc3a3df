{#- One row per (instrument, timeframe, bar) with every feature of the spec, in spec order.
    Recursive indicators run over the whole series (they need it for exactness); an incremental run
    writes only rows from each series' last built bar on (or the [start, end) window if given). -#}
{{ config(
    materialized='incremental',
    unique_key=['instrument_id', 'timeframe', 'bar_at'],
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    pre_hook="set local enable_mergejoin = off",
    post_hook=[
        "select create_hypertable('{{ this }}', 'bar_at', chunk_time_interval => interval '90 days', migrate_data => true, if_not_exists => true)",
        "create unique index if not exists features_key on {{ this }} (instrument_id, timeframe, bar_at)",
    ],
) }}
{%- set spec = feature_spec() -%}
{%- set s1 = {} -%}{%- set s2 = {} -%}{%- set finals = [] -%}
{%- set coarse = [] -%}{%- set needs_book = [] -%}
{%- for feature in spec.features -%}
  {%- set parts = feature_parts(feature) -%}
  {%- for column in parts.s1 %}{% do s1.update({column[0]: column[1]}) %}{% endfor -%}
  {%- for column in parts.s2 %}{% do s2.update({column[0]: column[1]}) %}{% endfor -%}
  {%- do finals.append([feature.name, parts.final]) -%}
  {%- if feature.timeframe is not none %}{% do coarse.append(feature) %}{% endif -%}
  {%- if feature.indicator in ('book_imbalance', 'book_spread') %}{% do needs_book.append(1) %}{% endif -%}
{%- endfor -%}
{%- set seconds = {'1m': 60, '5m': 300, '15m': 900, '1h': 3600, '1d': 86400} -%}

with bars as (
    select
        bars.instrument_id,
        bars.timeframe,
        bars.bar_at,
        bars.open,
        bars.high,
        bars.low,
        bars.close,
        bars.volume,
        instruments.exchange
    from {{ ref('int_bars_adjusted') }} as bars
    inner join {{ ref('stg_market__instruments') }} as instruments on bars.instrument_id = instruments.instrument_id
    where bars.timeframe in ({{ quoted_list(var('feature_timeframes')) }})
),

series as (
    select
        *,
        row_number() over series_window as bar_number,
        lag(close) over series_window as previous_close,
        ln(close / lag(close) over series_window) as log_return
    from bars
    window series_window as (partition by instrument_id, timeframe order by bar_at)
),

derived as (
    -- greatest() skips NULLs, so the first bar of a series is guarded explicitly.
    select
        *,
        case when previous_close is not null then
            greatest(high - low, greatest(abs(high - previous_close), abs(low - previous_close))) end as true_range,
        case when previous_close is not null then greatest(close - previous_close, 0.0) end as gain,
        case when previous_close is not null then greatest(previous_close - close, 0.0) end as loss
    from series
),

reference_instruments as (
    select exchange, reference_key
    from (values
        {%- for exchange, key in spec.references.items() %}
        ('{{ exchange }}', '{{ key }}'){{ "," if not loop.last }}
        {%- endfor %}
    ) as pairs (exchange, reference_key)
),

with_reference as (
    select derived.*, reference.log_return as reference_log_return
    from derived
    left join reference_instruments on derived.exchange = reference_instruments.exchange
    left join {{ ref('stg_market__instruments') }} as reference_instrument
        on reference_instrument.instrument_key = reference_instruments.reference_key
    left join derived as reference
        on reference.instrument_id = reference_instrument.instrument_id
        and reference.timeframe = derived.timeframe
        and reference.bar_at = derived.bar_at
),

{%- if needs_book %}

with_book as (
    -- The latest depth snapshot inside the bar, if any.
    select with_reference.*, book.best_bid as book_best_bid, book.best_ask as book_best_ask,
        book.bid_size as book_bid_size, book.ask_size as book_ask_size
    from with_reference
    left join lateral (
        select snapshots.best_bid, snapshots.best_ask, snapshots.bid_size, snapshots.ask_size
        from {{ ref('stg_market__order_book_snapshots') }} as snapshots
        where snapshots.instrument_id = with_reference.instrument_id
            and snapshots.snapshot_at >= with_reference.bar_at
            and snapshots.snapshot_at < with_reference.bar_at + case with_reference.timeframe
                {%- for timeframe, interval in {'1m': '1 minute', '5m': '5 minutes', '15m': '15 minutes', '1h': '1 hour', '1d': '1 day'}.items() %}
                when '{{ timeframe }}' then interval '{{ interval }}'
                {%- endfor %} end
        order by snapshots.snapshot_at desc
        limit 1
    ) as book on true
),
{%- else %}

with_book as (
    select * from with_reference
),
{%- endif %}

stage_1 as (
    select
        *
        {%- for column, expression in s1.items() %},
        {{ expression }} as {{ column }}
        {%- endfor %}
    from with_book
    window series_window as (partition by instrument_id, timeframe order by bar_at)
),

stage_2 as (
    select
        *
        {%- for column, expression in s2.items() %},
        {{ expression }} as {{ column }}
        {%- endfor %}
    from stage_1
    window series_window as (partition by instrument_id, timeframe order by bar_at)
),

{%- for feature in coarse %}
{%- set coarse_interval = timeframe_interval(feature.timeframe) %}

{{ feature.name }}__coarse_bars as (
    select
        instrument_id,
        bar_at,
        case when lag(close) over coarse_window is not null then
            greatest(close - lag(close) over coarse_window, 0.0) end as gain,
        case when lag(close) over coarse_window is not null then
            greatest(lag(close) over coarse_window - close, 0.0) end as loss
    from {{ ref('int_bars_adjusted') }}
    where timeframe = '{{ feature.timeframe }}'
    window coarse_window as (partition by instrument_id order by bar_at)
),

{{ feature.name }}__events as (
    -- A coarse bar becomes usable when it closes; each row takes the latest usable one (as-of).
    select
        coarse.instrument_id,
        row_timeframes.timeframe,
        coarse.bar_at + interval '{{ coarse_interval }}' as available_at,
        0 as event_order,
        null::timestamptz as row_bar_at,
        {{ rsi_from("wilder_mean(coarse.gain, " ~ feature.params.period ~ ") over coarse_running", "wilder_mean(coarse.loss, " ~ feature.params.period ~ ") over coarse_running") | indent(8) }} as value
    from {{ feature.name }}__coarse_bars as coarse
    cross join (
        select distinct timeframe from bars
        where timeframe in (
            {%- set eligible = [] -%}
            {%- for timeframe in var('feature_timeframes') if seconds[timeframe] <= seconds[feature.timeframe] %}{% do eligible.append(timeframe) %}{% endfor -%}
            {{ quoted_list(eligible) if eligible else "''" }})
    ) as row_timeframes
    window coarse_running as (partition by coarse.instrument_id, row_timeframes.timeframe order by coarse.bar_at rows between unbounded preceding and current row)
    union all
    select
        instrument_id,
        timeframe,
        bar_at + case timeframe
            {%- for timeframe, interval in {'1m': '1 minute', '5m': '5 minutes', '15m': '15 minutes', '1h': '1 hour', '1d': '1 day'}.items() %}
            when '{{ timeframe }}' then interval '{{ interval }}'
            {%- endfor %} end,
        1,
        bar_at,
        null
    from bars
),

{{ feature.name }}__grouped as (
    select
        *,
        count(*) filter (where event_order = 0) over (
            partition by instrument_id, timeframe order by available_at, event_order
            rows between unbounded preceding and current row
        ) as event_group
    from {{ feature.name }}__events
),

{{ feature.name }}__coarse as (
    select instrument_id, timeframe, row_bar_at as bar_at, value
    from (
        select
            instrument_id,
            timeframe,
            row_bar_at,
            event_order,
            first_value(value) over (
                partition by instrument_id, timeframe, event_group order by available_at, event_order
            ) as value,
            event_group
        from {{ feature.name }}__grouped
    ) as filled
    where event_order = 1 and event_group > 0
),
{%- endfor %}

final as (
    select
        stage_2.instrument_id,
        stage_2.timeframe,
        stage_2.bar_at
        {%- for name, expression in finals %},
        ({{ expression }})::double precision as {{ name }}
        {%- endfor %},
        '{{ spec.spec_hash }}'::text as spec_hash
    from stage_2
    {%- for feature in coarse %}
    left join {{ feature.name }}__coarse
        on {{ feature.name }}__coarse.instrument_id = stage_2.instrument_id
        and {{ feature.name }}__coarse.timeframe = stage_2.timeframe
        and {{ feature.name }}__coarse.bar_at = stage_2.bar_at
    {%- endfor %}
)

select final.*
from final
{%- if is_incremental() %}
left join (
    select instrument_id, timeframe, max(bar_at) as last_bar_at
    from {{ this }}
    group by instrument_id, timeframe
) as built on built.instrument_id = final.instrument_id and built.timeframe = final.timeframe
{%- endif %}
where true
{%- if is_incremental() and var('start') is none %}
    and (built.last_bar_at is null or final.bar_at >= built.last_bar_at)
{%- endif %}
{%- if var('start') is not none %}
    and final.bar_at >= '{{ var("start") }}'::timestamptz
{%- endif %}
{%- if var('end') is not none %}
    and final.bar_at < '{{ var("end") }}'::timestamptz
{%- endif %}

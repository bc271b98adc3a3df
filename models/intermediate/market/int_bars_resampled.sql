-- Every timeframe per instrument: native bars as they are, plus 1m bars re-grained with time_bucket
-- into each resample timeframe; a native bar wins over a resampled one at the same key. Incremental:
-- each (instrument, timeframe) series is rebuilt from its last built bar on (that bucket may have been
-- partial), or from the bucket holding var start when that is earlier. When raw bars were deleted or
-- replaced under built rows (raw_bars_replaced), it starts over from empty.
{#- analyze: the features model plans on these statistics in the same dbt run (a fresh table without
    them got a plan over 6x slower). -#}
{{ config(
    materialized='incremental',
    unique_key=['instrument_id', 'timeframe', 'bar_at'],
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    post_hook=["create unique index if not exists int_bars_resampled_key on {{ this }} (timeframe, instrument_id, bar_at)",
               "analyze {{ this }}"],
) }}
-- depends_on: {{ ref('stg_market__instruments') }}
{%- set natives = {'stg_market__bars_1m': '1m', 'stg_market__bars_1h': '1h', 'stg_market__bars_1d': '1d'} -%}
{%- set timeframes = (['1m', '1h', '1d'] + var('resample_timeframes')) | unique | list -%}
{%- if is_incremental() and raw_bars_replaced(this) -%}
{%- do run_query("truncate table " ~ this) -%}
{%- endif -%}
{%- if is_incremental() -%}
{%- set floor = last_built_floor(this, timeframes) -%}
{%- if var('start') is not none -%}
{%- set floor = "least(" ~ floor ~ ", time_bucket(interval '1 day', '" ~ var('start') ~ "'::timestamptz))" -%}
{%- endif -%}
{%- endif %}

with
{%- if is_incremental() %}
watermarks as (
    select
        instruments.instrument_id,
        timeframes.timeframe,
        {%- if var('start') is none %}
        coalesce(last_row.bar_at, '-infinity'::timestamptz) as rebuild_from
        {%- else %}
        least(coalesce(last_row.bar_at, '-infinity'::timestamptz),
            time_bucket(timeframes.width, '{{ var("start") }}'::timestamptz)) as rebuild_from
        {%- endif %}
    from {{ ref('stg_market__instruments') }} as instruments
    cross join (values
        {%- for timeframe in timeframes %}
        ('{{ timeframe }}', interval '{{ timeframe_interval(timeframe) }}'){{ "," if not loop.last }}
        {%- endfor %}
    ) as timeframes (timeframe, width)
    left join lateral (
        select built.bar_at
        from {{ this }} as built
        where built.instrument_id = instruments.instrument_id and built.timeframe = timeframes.timeframe
        order by built.bar_at desc
        limit 1
    ) as last_row on true
),
{%- endif %}

native as (
    {%- for model, timeframe in natives.items() %}
    select bars.instrument_id, bars.timeframe, bars.bar_at, bars.open, bars.high, bars.low, bars.close, bars.volume,
        1 as precedence
    from {{ ref(model) }} as bars
    {%- if is_incremental() %}
    inner join watermarks on watermarks.instrument_id = bars.instrument_id and watermarks.timeframe = '{{ timeframe }}'
    where bars.bar_at >= watermarks.rebuild_from and bars.bar_at >= {{ floor }}
    {%- endif %}
    {{ "union all" if not loop.last }}
    {%- endfor %}
),

resampled as (
    {%- for timeframe in var('resample_timeframes') %}
    select
        bars.instrument_id,
        '{{ timeframe }}'::text as timeframe,
        time_bucket(interval '{{ timeframe_interval(timeframe) }}', bars.bar_at) as bar_at,
        first(bars.open, bars.bar_at) as open,
        max(bars.high) as high,
        min(bars.low) as low,
        last(bars.close, bars.bar_at) as close,
        sum(bars.volume) as volume,
        2 as precedence
    from {{ ref('stg_market__bars_1m') }} as bars
    {%- if is_incremental() %}
    inner join watermarks on watermarks.instrument_id = bars.instrument_id and watermarks.timeframe = '{{ timeframe }}'
    where bars.bar_at >= watermarks.rebuild_from and bars.bar_at >= {{ floor }}
    {%- endif %}
    group by 1, 2, 3
    {{ "union all" if not loop.last }}
    {%- endfor %}
),

ranked as (
    select
        *,
        row_number() over (partition by instrument_id, timeframe, bar_at order by precedence) as rank_at_key
    from (select * from native union all select * from resampled) as candidates
)

select instrument_id, timeframe, bar_at, open, high, low, close, volume
from ranked
where rank_at_key = 1

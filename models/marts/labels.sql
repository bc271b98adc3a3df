{#- Supervised-learning targets per (instrument, timeframe, bar): the forward return over h bars and a
    three-class direction (1 up, 0 flat, -1 down) with a threshold scaled by the bar's realised
    volatility. A label at t reads bars up to t+h and nothing later; rows without h later bars are NULL
    until those bars arrive (an incremental run rewrites them then). -#}
{{ config(
    materialized='incremental',
    unique_key=['instrument_id', 'timeframe', 'bar_at'],
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    post_hook=[
        "select create_hypertable('{{ this }}', 'bar_at', chunk_time_interval => interval '90 days', migrate_data => true, if_not_exists => true)",
        "create unique index if not exists labels_key on {{ this }} (instrument_id, timeframe, bar_at)",
    ],
) }}
-- depends_on: {{ ref('stg_market__instruments') }}
{%- set labels = feature_spec().labels -%}
{%- set horizon = labels.horizon -%}
{%- set resume = is_incremental() and var('start') is none %}

with
{%- if resume %}
rewrite as (
    -- Per series: rewrite from the first row still waiting for its forward bars, the h-th last row
    -- (the whole series when it has fewer rows).
    select
        instruments.instrument_id,
        timeframes.timeframe,
        coalesce(waiting.bar_at, '-infinity'::timestamptz) as rewrite_from
    from {{ ref('stg_market__instruments') }} as instruments
    cross join (values
        {%- for timeframe in var('feature_timeframes') %}
        ('{{ timeframe }}'){{ "," if not loop.last }}
        {%- endfor %}
    ) as timeframes (timeframe)
    left join lateral (
        select built.bar_at from {{ this }} as built
        where built.instrument_id = instruments.instrument_id and built.timeframe = timeframes.timeframe
        order by built.bar_at desc
        offset {{ horizon - 1 }}
        limit 1
    ) as waiting on true
),
{%- endif %}

bars as (
    {%- if resume %}
    -- Per series through the index (lateral), whatever the planner's statistics on fresh tables say.
    select bars.instrument_id, bars.timeframe, bars.bar_at, bars.close
    from rewrite
    cross join lateral (
        select adjusted.instrument_id, adjusted.timeframe, adjusted.bar_at, adjusted.close
        from {{ ref('int_bars_adjusted') }} as adjusted
        where adjusted.instrument_id = rewrite.instrument_id and adjusted.timeframe = rewrite.timeframe
            and adjusted.bar_at >= rewrite.rewrite_from
    ) as bars
    {%- else %}
    select bars.instrument_id, bars.timeframe, bars.bar_at, bars.close
    from {{ ref('int_bars_adjusted') }} as bars
    where bars.timeframe in ({{ quoted_list(var('feature_timeframes')) }})
    {%- endif %}
),

forward as (
    select
        bars.instrument_id,
        bars.timeframe,
        bars.bar_at,
        lead(bars.close, {{ horizon }}) over series_window / bars.close - 1 as forward_return,
        ln(lead(bars.close, {{ horizon }}) over series_window / bars.close) as forward_log_return,
        {{ labels.threshold_vol_multiple }} * features.{{ labels.vol_feature }} * sqrt({{ horizon }}) as threshold
    from bars
    {%- if resume %}
    cross join lateral (
        select built.{{ labels.vol_feature }}
        from {{ ref('features') }} as built
        where built.instrument_id = bars.instrument_id and built.timeframe = bars.timeframe
            and built.bar_at = bars.bar_at
    ) as features
    {%- else %}
    inner join {{ ref('features') }} as features
        on features.instrument_id = bars.instrument_id
        and features.timeframe = bars.timeframe
        and features.bar_at = bars.bar_at
    {%- endif %}
    window series_window as (partition by bars.instrument_id, bars.timeframe order by bars.bar_at)
),

final as (
    select
        instrument_id,
        timeframe,
        bar_at,
        {{ horizon }} as horizon,
        forward_return,
        forward_log_return,
        case
            when forward_log_return is null or threshold is null then null
            when forward_log_return > threshold then 1
            when forward_log_return < -threshold then -1
            else 0
        end::smallint as direction
    from forward
)

select final.*
from final
where true
{%- if var('start') is not none %}
    and final.bar_at >= '{{ var("start") }}'::timestamptz
{%- endif %}
{%- if var('end') is not none %}
    and final.bar_at < '{{ var("end") }}'::timestamptz
{%- endif %}

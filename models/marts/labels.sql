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
{%- set labels = feature_spec().labels -%}
{%- set horizon = labels.horizon -%}

with bars as (
    select instrument_id, timeframe, bar_at, close
    from {{ ref('int_bars_adjusted') }}
    where timeframe in ({{ quoted_list(var('feature_timeframes')) }})
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
    inner join {{ ref('features') }} as features
        on features.instrument_id = bars.instrument_id
        and features.timeframe = bars.timeframe
        and features.bar_at = bars.bar_at
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
{%- if is_incremental() %}
left join (
    -- Rewrite from the first row still waiting for its forward bars (or after the last row).
    select
        instrument_id,
        timeframe,
        coalesce(min(bar_at) filter (where forward_return is null), max(bar_at) + interval '1 microsecond')
            as rewrite_from
    from {{ this }}
    group by instrument_id, timeframe
) as built on built.instrument_id = final.instrument_id and built.timeframe = final.timeframe
{%- endif %}
where true
{%- if is_incremental() and var('start') is none %}
    and (built.rewrite_from is null or final.bar_at >= built.rewrite_from)
{%- endif %}
{%- if var('start') is not none %}
    and final.bar_at >= '{{ var("start") }}'::timestamptz
{%- endif %}
{%- if var('end') is not none %}
    and final.bar_at < '{{ var("end") }}'::timestamptz
{%- endif %}

-- Back-adjust prices (and split volumes) for every corporate action with ex_at after the bar:
-- a split divides earlier prices by its ratio; a cash dividend scales them by 1 - amount / the last
-- close before ex_at. Bars with no later action keep their raw values exactly.
-- A view: a new corporate action re-adjusts all history at once, and readers' time and series
-- predicates reach int_bars_resampled's index (the ranges below are a handful of rows).
{{ config(materialized='view') }}
{%- set timeframes = (['1m', '1h', '1d'] + var('resample_timeframes')) | unique | list %}

select
    bars.instrument_id,
    bars.timeframe,
    bars.bar_at,
    bars.open * coalesce(ranges.price_factor, 1) as open,
    bars.high * coalesce(ranges.price_factor, 1) as high,
    bars.low * coalesce(ranges.price_factor, 1) as low,
    bars.close * coalesce(ranges.price_factor, 1) as close,
    bars.volume * coalesce(ranges.volume_factor, 1) as volume,
    ranges.price_factor is not null as is_adjusted
from {{ ref('int_bars_resampled') }} as bars
left join (
    -- Each range [valid_from, valid_to) carries the product of every action at or after valid_to.
    select
        instrument_id,
        timeframe,
        coalesce(
            lag(ex_at) over (partition by instrument_id, timeframe order by ex_at), '-infinity'::timestamptz
        ) as valid_from,
        ex_at as valid_to,
        exp(sum(ln(price_factor)) over later) as price_factor,
        exp(sum(ln(volume_factor)) over later) as volume_factor
    from (
        select
            actions.instrument_id,
            timeframes.timeframe,
            actions.ex_at,
            case
                when actions.action = 'split' then 1.0 / actions.split_ratio
                else 1.0 - actions.dividend_amount / (
                    select last_close.close
                    from {{ ref('int_bars_resampled') }} as last_close
                    where last_close.instrument_id = actions.instrument_id
                        and last_close.timeframe = timeframes.timeframe
                        and last_close.bar_at < actions.ex_at
                    order by last_close.bar_at desc
                    limit 1
                )
            end as price_factor,
            case when actions.action = 'split' then actions.split_ratio else 1.0 end as volume_factor
        from {{ ref('stg_market__corporate_actions') }} as actions
        cross join (values
            {%- for timeframe in timeframes %}
            ('{{ timeframe }}'){{ "," if not loop.last }}
            {%- endfor %}
        ) as timeframes (timeframe)
    ) as actions
    where price_factor > 0
    window later as (partition by instrument_id, timeframe order by ex_at desc rows unbounded preceding)
) as ranges
    on ranges.instrument_id = bars.instrument_id
    and ranges.timeframe = bars.timeframe
    and bars.bar_at >= ranges.valid_from
    and bars.bar_at < ranges.valid_to

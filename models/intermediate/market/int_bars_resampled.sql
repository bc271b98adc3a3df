-- Every timeframe per instrument: native bars as they are, plus 1m bars re-grained with time_bucket
-- into each resample timeframe; a native bar wins over a resampled one at the same key.
with native as (
    {%- for model in ['stg_market__bars_1m', 'stg_market__bars_1h', 'stg_market__bars_1d'] %}
    select instrument_id, timeframe, bar_at, open, high, low, close, volume, 1 as precedence
    from {{ ref(model) }}
    {{ "union all" if not loop.last }}
    {%- endfor %}
),

resampled as (
    {%- for timeframe in var('resample_timeframes') %}
    select
        instrument_id,
        '{{ timeframe }}'::text as timeframe,
        time_bucket(interval '{{ timeframe_interval(timeframe) }}', bar_at) as bar_at,
        first(open, bar_at) as open,
        max(high) as high,
        min(low) as low,
        last(close, bar_at) as close,
        sum(volume) as volume,
        2 as precedence
    from {{ ref('stg_market__bars_1m') }}
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

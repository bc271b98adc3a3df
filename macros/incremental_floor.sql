{#- For an incremental run: the earliest `last built bar_at` over every (instrument, timeframe) series
    of `relation`, as a timestamptz literal ('-infinity' when some series has none yet). Models add it
    as a constant lower bound next to their per-series bounds so the planner can prune chunks and use
    index ranges, which a bound coming from a join cannot give it. -#}
{% macro last_built_floor(relation, timeframes) -%}
{%- if not execute -%}{{ return("'-infinity'::timestamptz") }}{%- endif -%}
{%- set query -%}
select coalesce(min(coalesce(last_row.bar_at, '-infinity'::timestamptz)), '-infinity'::timestamptz)::text
from {{ ref('stg_market__instruments') }} as instruments
cross join (values {% for timeframe in timeframes %}('{{ timeframe }}'){{ ", " if not loop.last }}{% endfor %}) as timeframes (timeframe)
left join lateral (
    select built.bar_at from {{ relation }} as built
    where built.instrument_id = instruments.instrument_id and built.timeframe = timeframes.timeframe
    order by built.bar_at desc
    limit 1
) as last_row on true
{%- endset -%}
{%- set floor = run_query(query).columns[0].values()[0] -%}
{{ return("'" ~ floor ~ "'::timestamptz") }}
{%- endmacro %}

{#- For int_bars_resampled's incremental run: true when the raw bars no longer hold the last built bar
    of some (instrument, native timeframe) series (raw rows deleted, replaced or un-gated), which an
    append-only increment cannot repair; the model then starts over from empty. -#}
{% macro raw_bars_replaced(relation) -%}
{%- if not execute -%}{{ return(false) }}{%- endif -%}
{%- set query -%}
select exists (
    select 1
    from {{ ref('stg_market__instruments') }} as instruments
    cross join (values
        ('1m', interval '1 minute'), ('1h', interval '1 hour'), ('1d', interval '1 day')
    ) as timeframes (timeframe, width)
    cross join lateral (
        select built.bar_at from {{ relation }} as built
        where built.instrument_id = instruments.instrument_id and built.timeframe = timeframes.timeframe
        order by built.bar_at desc
        limit 1
    ) as last_row
    where not exists (
        select 1 from {{ ref('stg_market__bars_1m') }} as raw
        where raw.instrument_id = instruments.instrument_id
            and raw.bar_at >= last_row.bar_at and raw.bar_at < last_row.bar_at + timeframes.width
    )
    and not exists (
        select 1 from {{ ref('stg_market__bars_1h') }} as raw
        where timeframes.timeframe = '1h' and raw.instrument_id = instruments.instrument_id
            and raw.bar_at = last_row.bar_at
    )
    and not exists (
        select 1 from {{ ref('stg_market__bars_1d') }} as raw
        where timeframes.timeframe = '1d' and raw.instrument_id = instruments.instrument_id
            and raw.bar_at = last_row.bar_at
    )
)
{%- endset -%}
{{ return(run_query(query).columns[0].values()[0]) }}
{%- endmacro %}

{#- One row per (instrument, timeframe, bar) with every feature of the spec, in spec order, then the
    state of each recursive indicator after that bar (state__*). An incremental run recomputes each
    series from a stored row a few bars back (recursions resume from its state, exactly) and writes
    rows from the series' last built bar on; with [start, end) it rewrites that window from full series. -#}
{#- pre_hook: resuming reads short per-series slices, where a merge join's sort of a whole side is the slow
    plan; a full build is the opposite (mergejoin off made a 23 s build take over 6 minutes). -#}
{{ config(
    materialized='incremental',
    unique_key=['instrument_id', 'timeframe', 'bar_at'],
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    pre_hook="{{ 'set local enable_mergejoin = off' if is_incremental() and var('start') is none else 'select 1' }}",
    post_hook=[
        "select create_hypertable('{{ this }}', 'bar_at', chunk_time_interval => interval '90 days', migrate_data => true, if_not_exists => true)",
        "create unique index if not exists features_key on {{ this }} (instrument_id, timeframe, bar_at)",
        "analyze {{ this }}",
    ],
) }}
{%- set spec = feature_spec() -%}
{%- set s1 = {} -%}{%- set s2 = {} -%}{%- set states = {} -%}{%- set finals = [] -%}
{%- set coarse = [] -%}{%- set needs_book = [] -%}
{%- for feature in spec.features -%}
  {%- set parts = feature_parts(feature) -%}
  {%- for column in parts.s1 %}{% do s1.update({column[0]: column[1]}) %}{% endfor -%}
  {%- for column in parts.s2 %}{% do s2.update({column[0]: column[1]}) %}{% endfor -%}
  {%- for state in parts.states %}{% do states.update({state[0]: state}) %}{% endfor -%}
  {%- do finals.append([feature.name, parts.final]) -%}
  {%- if feature.timeframe is not none %}{% do coarse.append(feature) %}{% endif -%}
  {%- if feature.indicator in ('book_imbalance', 'book_spread') %}{% do needs_book.append(1) %}{% endif -%}
{%- endfor -%}
{%- set seconds = {'1m': 60, '5m': 300, '15m': 900, '1h': 3600, '1d': 86400} -%}
{#- Resume: recompute each series from a seed row `lookback` rows before its last built bar (its
    stored states continue the recursions; the rows after it feed the rolling windows) and write from
    the last built bar on. Otherwise (full build, or a [start, end) window) every series from its start. -#}
{%- set resume = is_incremental() and var('start') is none -%}
{%- set lookback = lookback_bars(spec) -%}

with series_keys as (
    select instruments.instrument_id, timeframes.timeframe
    from {{ ref('stg_market__instruments') }} as instruments
    cross join (values
        {%- for timeframe in var('feature_timeframes') %}
        ('{{ timeframe }}'){{ "," if not loop.last }}
        {%- endfor %}
    ) as timeframes (timeframe)
),

seeds as materialized (
    select
        series_keys.instrument_id,
        series_keys.timeframe,
    {%- if resume %}
        last_row.bar_at as emit_from,
        seed_row.bar_at as seed_at,
        seed_row.state__bar_number as seed__bar_number
        {%- for name, state in states.items() %},
        case when seed_row.bar_at is not null then
            array[seed_row.state__{{ name }}__seen, seed_row.state__{{ name }}__value, {{ state[3] }}]::double precision[]
        end as seed__{{ name }}
        {%- endfor %}
    from series_keys
    left join lateral (
        select built.bar_at
        from {{ this }} as built
        where built.instrument_id = series_keys.instrument_id and built.timeframe = series_keys.timeframe
        order by built.bar_at desc
        limit 1
    ) as last_row on true
    left join lateral (
        select built.*
        from {{ this }} as built
        where built.instrument_id = series_keys.instrument_id and built.timeframe = series_keys.timeframe
            and built.bar_at < last_row.bar_at
        order by built.bar_at desc
        offset {{ lookback }}
        limit 1
    ) as seed_row on true
    {%- else %}
        null::timestamptz as emit_from,
        null::timestamptz as seed_at,
        null::bigint as seed__bar_number
        {%- for name in states %},
        null::double precision[] as seed__{{ name }}
        {%- endfor %}
    from series_keys
    {%- endif %}
),

bars as (
    select
        bars.instrument_id,
        bars.timeframe,
        bars.bar_at,
        bars.open,
        bars.high,
        bars.low,
        bars.close,
        bars.volume,
        instruments.exchange,
        seeds.emit_from,
        seeds.seed_at,
        seeds.seed__bar_number
        {%- for name in states %},
        seeds.seed__{{ name }}
        {%- endfor %}
    {%- if resume %}
    -- Per series through the index (lateral), whatever the planner's statistics on fresh tables say.
    from seeds
    cross join lateral (
        select adjusted.*
        from {{ ref('int_bars_adjusted') }} as adjusted
        where adjusted.instrument_id = seeds.instrument_id and adjusted.timeframe = seeds.timeframe
            and adjusted.bar_at >= coalesce(seeds.seed_at, '-infinity'::timestamptz)
    ) as bars
    inner join {{ ref('stg_market__instruments') }} as instruments on bars.instrument_id = instruments.instrument_id
    {%- else %}
    from {{ ref('int_bars_adjusted') }} as bars
    inner join {{ ref('stg_market__instruments') }} as instruments on bars.instrument_id = instruments.instrument_id
    inner join seeds on seeds.instrument_id = bars.instrument_id and seeds.timeframe = bars.timeframe
    where bars.timeframe in ({{ quoted_list(var('feature_timeframes')) }})
    {%- endif %}
),

series as (
    -- The seed row is the slice's first bar: it keeps its stored bar number and state.
    select
        *,
        row_number() over series_window + coalesce(seed__bar_number - 1, 0) as bar_number,
        seed_at is null or bar_at > seed_at as is_new,
        -- Rows before emit_from only feed the windows of later rows: costly columns skip them.
        emit_from is null or bar_at >= emit_from as is_emitted,
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
    select pairs.exchange, reference_instrument.instrument_id
    from (values
        {%- for exchange, key in spec.references.items() %}
        ('{{ exchange }}', '{{ key }}'){{ "," if not loop.last }}
        {%- endfor %}
    ) as pairs (exchange, reference_key)
    inner join {{ ref('stg_market__instruments') }} as reference_instrument
        on reference_instrument.instrument_key = pairs.reference_key
),

reference_starts as materialized (
    -- Each reference series from its last bar before the earliest sliced bar of its timeframe, so its
    -- log return is exact on every bar a slice can join.
    select
        starts.timeframe,
        references_used.instrument_id,
        coalesce((
            select max(earlier.bar_at)
            from {{ ref('int_bars_adjusted') }} as earlier
            where earlier.instrument_id = references_used.instrument_id and earlier.timeframe = starts.timeframe
                and earlier.bar_at < starts.slice_from
        ), '-infinity'::timestamptz) as reference_from
    from (select timeframe, min(bar_at) as slice_from from bars group by timeframe) as starts
    cross join (select distinct instrument_id from reference_instruments) as references_used
),

reference_series as (
    select
        reference.instrument_id,
        reference.timeframe,
        reference.bar_at,
        ln(reference.close / lag(reference.close) over series_window) as log_return
    from reference_starts
    cross join lateral (
        select adjusted.instrument_id, adjusted.timeframe, adjusted.bar_at, adjusted.close
        from {{ ref('int_bars_adjusted') }} as adjusted
        where adjusted.instrument_id = reference_starts.instrument_id
            and adjusted.timeframe = reference_starts.timeframe
            and adjusted.bar_at >= reference_starts.reference_from
    ) as reference
    window series_window as (partition by reference.instrument_id, reference.timeframe order by reference.bar_at)
),

with_reference as (
    select derived.*, reference.log_return as reference_log_return
    from derived
    left join reference_instruments on derived.exchange = reference_instruments.exchange
    left join reference_series as reference
        on reference.instrument_id = reference_instruments.instrument_id
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
        {%- for name, state in states.items() if state[4] == 1 %},
        {{ state[1] }}_state(case when is_new then {{ state[2] }} end, {{ state[3] }}, seed__{{ name }}) over {{ running() }} as state__{{ name }}
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
),

stage_3 as (
    select
        *
        {%- for name, state in states.items() if state[4] == 2 %},
        {{ state[1] }}_state(case when is_new then {{ state[2] }} end, {{ state[3] }}, seed__{{ name }}) over {{ running() }} as state__{{ name }}
        {%- endfor %}
    from stage_2
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

{{ feature.name }}__coarse_values as (
    -- A coarse bar becomes usable when it closes. The recursion runs over the whole coarse series
    -- (few bars next to the rows'); only the as-of lookup below is restricted to the slices.
    select
        instrument_id,
        bar_at + interval '{{ coarse_interval }}' as available_at,
        {{ rsi_from("wilder_mean(gain, " ~ feature.params.period ~ ") over coarse_running", "wilder_mean(loss, " ~ feature.params.period ~ ") over coarse_running") | indent(8) }} as value
    from {{ feature.name }}__coarse_bars
    window coarse_running as (partition by instrument_id order by bar_at rows between unbounded preceding and current row)
),

{{ feature.name }}__anchors as (
    -- Per row series: the last coarse value usable at the close of its slice's first bar.
    {%- set eligible = [] -%}
    {%- for timeframe in var('feature_timeframes') if seconds[timeframe] <= seconds[feature.timeframe] %}{% do eligible.append(timeframe) %}{% endfor %}
    select seeds.instrument_id, seeds.timeframe, max(coarse.available_at) as anchor_at
    from seeds
    left join {{ feature.name }}__coarse_values as coarse
        on coarse.instrument_id = seeds.instrument_id
        and coarse.available_at <= seeds.seed_at + case seeds.timeframe
            {%- for timeframe, interval in {'1m': '1 minute', '5m': '5 minutes', '15m': '15 minutes', '1h': '1 hour', '1d': '1 day'}.items() %}
            when '{{ timeframe }}' then interval '{{ interval }}'
            {%- endfor %} end
    where seeds.timeframe in ({{ quoted_list(eligible) if eligible else "''" }})
    group by seeds.instrument_id, seeds.timeframe
),

{{ feature.name }}__events as (
    -- Each row takes the latest usable coarse value (as-of).
    select
        coarse.instrument_id,
        anchors.timeframe,
        coarse.available_at,
        0 as event_order,
        null::timestamptz as row_bar_at,
        coarse.value
    from {{ feature.name }}__coarse_values as coarse
    inner join {{ feature.name }}__anchors as anchors on anchors.instrument_id = coarse.instrument_id
    where coarse.available_at >= coalesce(anchors.anchor_at, '-infinity'::timestamptz)
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
        stage_3.instrument_id,
        stage_3.timeframe,
        stage_3.bar_at
        {%- for name, expression in finals %},
        ({{ expression }})::double precision as {{ name }}
        {%- endfor %},
        '{{ spec.spec_hash }}'::text as spec_hash,
        -- Recursion state after this bar, from which an incremental build resumes.
        stage_3.bar_number as state__bar_number
        {%- for name in states %},
        stage_3.state__{{ name }}
        {%- endfor %},
        stage_3.emit_from
    from stage_3
    {%- for feature in coarse %}
    left join {{ feature.name }}__coarse
        on {{ feature.name }}__coarse.instrument_id = stage_3.instrument_id
        and {{ feature.name }}__coarse.timeframe = stage_3.timeframe
        and {{ feature.name }}__coarse.bar_at = stage_3.bar_at
    {%- endfor %}
)

select
    {%- for column in ['instrument_id', 'timeframe', 'bar_at'] + finals | map('first') | list + ['spec_hash', 'state__bar_number'] %}
    final.{{ column }},
    {%- endfor %}
    {%- for name in states %}
    final.state__{{ name }}[1] as state__{{ name }}__seen,
    final.state__{{ name }}[2] as state__{{ name }}__value{{ "," if not loop.last }}
    {%- endfor %}
from final
where true
{%- if resume %}
    and (final.emit_from is null or final.bar_at >= final.emit_from)
{%- endif %}
{%- if var('start') is not none %}
    and final.bar_at >= '{{ var("start") }}'::timestamptz
{%- endif %}
{%- if var('end') is not none %}
    and final.bar_at < '{{ var("end") }}'::timestamptz
{%- endif %}

{#- Raw bars of one table, cast and renamed; with enforce_data_gate only (instrument, UTC day) rows
    whose data_gate status is 'passed' for that table. -#}
{% macro gated_bars(table, timeframe) -%}
select
    bars.instrument_id,
    '{{ timeframe }}'::text as timeframe,
    bars.bar_at,
    bars.open::double precision as open,
    bars.high::double precision as high,
    bars.low::double precision as low,
    bars.close::double precision as close,
    bars.volume::double precision as volume
from {{ source('market', table) }} as bars
{%- if var('enforce_data_gate', true) %}
join {{ source('market', 'data_gate') }} as gate
    on gate.target_table = '{{ table }}'
    and gate.instrument_id = bars.instrument_id
    and gate.day = (bars.bar_at at time zone 'UTC')::date
    and gate.status = 'passed'
{%- endif %}
{%- endmacro %}

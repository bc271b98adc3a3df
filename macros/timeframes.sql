{% macro timeframe_interval(timeframe) -%}
{{ return({'1m': '1 minute', '5m': '5 minutes', '15m': '15 minutes', '1h': '1 hour', '1d': '1 day'}[timeframe]) }}
{%- endmacro %}

{% macro timeframe_seconds(timeframe) -%}
{{ return({'1m': 60, '5m': 300, '15m': 900, '1h': 3600, '1d': 86400}[timeframe]) }}
{%- endmacro %}

{% macro quoted_list(values) -%}
{%- for value in values %}'{{ value }}'{{ ", " if not loop.last }}{% endfor -%}
{%- endmacro %}

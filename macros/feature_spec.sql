{#- The feature spec (tradeloom/features/spec.py) arrives as the `feature_spec` var; every feature
    becomes SQL through `feature_parts`, which returns what it needs in stages: s1 (windows over the bar
    series), states (recursive aggregate states, stored with each row so an incremental build resumes
    from them: [name, ema|wilder, input column, period, stage]; stage 1 reads bar columns, stage 2 reads
    s2 columns), s2 (plain expressions over s1 columns and stage-1 states), final (plain expressions). -#}
{% macro feature_spec() -%}
{%- set spec = var('feature_spec', none) -%}
{%- if spec is none -%}
{{ exceptions.raise_compiler_error("var feature_spec is missing: build features with `tradeloom features build` (it passes tradeloom.features.spec)") }}
{%- endif -%}
{{ return(spec) }}
{%- endmacro %}

{% macro rolling(period) -%}
(series_window rows between {{ period - 1 }} preceding and current row)
{%- endmacro %}

{% macro running() -%}
(series_window rows between unbounded preceding and current row)
{%- endmacro %}

{#- Bars before a row that its rolling windows and lags read (an incremental build recomputes these). -#}
{% macro lookback_bars(spec) -%}
{%- set longest = [1] -%}
{%- for feature in spec.features -%}
  {%- for key in ('period', 'lag') if feature.params[key] is number -%}{% do longest.append(feature.params[key]) %}{%- endfor -%}
{%- endfor -%}
{{ return(longest | max + 1) }}
{%- endmacro %}

{% macro rsi_from(gain, loss) -%}
case
    when {{ gain }} + {{ loss }} <> 0 then 100.0 * ({{ gain }} / ({{ gain }} + {{ loss }}))
    when {{ gain }} + {{ loss }} = 0 then 0.0
end
{%- endmacro %}

{% macro feature_parts(feature) -%}
{%- set kind = feature.indicator -%}
{%- set p = feature.params -%}
{%- set name = feature.name -%}
{%- set s1 = [] -%}{%- set s2 = [] -%}{%- set states = [] -%}
{%- if kind == 'return' -%}
  {%- do s1.append([name, "case when bar_number > " ~ p.lag ~ " then close / lag(close, " ~ p.lag ~ ") over series_window - 1 end"]) -%}
  {%- set final = name -%}
{%- elif kind == 'log_return' -%}
  {%- do s1.append([name, "case when bar_number > " ~ p.lag ~ " then ln(close / lag(close, " ~ p.lag ~ ") over series_window) end"]) -%}
  {%- set final = name -%}
{%- elif kind == 'sma' -%}
  {%- do s1.append([name, "case when bar_number >= " ~ p.period ~ " then avg(close) over " ~ rolling(p.period) ~ " end"]) -%}
  {%- set final = name -%}
{%- elif kind == 'ema' -%}
  {%- do states.append(["ema_close_" ~ p.period, "ema", "close", p.period, 1]) -%}
  {%- set final = "seeded_mean_final(state__ema_close_" ~ p.period ~ ")" -%}
{%- elif kind == 'rsi_wilder' and feature.timeframe is none -%}
  {%- do states.append(["wilder_gain_" ~ p.period, "wilder", "gain", p.period, 1]) -%}
  {%- do states.append(["wilder_loss_" ~ p.period, "wilder", "loss", p.period, 1]) -%}
  {%- set final = rsi_from("seeded_mean_final(state__wilder_gain_" ~ p.period ~ ")", "seeded_mean_final(state__wilder_loss_" ~ p.period ~ ")") -%}
{%- elif kind == 'rsi_wilder' -%}
  {%- set final = name ~ "__coarse.value" -%}
{%- elif kind == 'atr_wilder' -%}
  {%- do states.append(["wilder_true_range_" ~ p.period, "wilder", "true_range", p.period, 1]) -%}
  {%- set final = "seeded_mean_final(state__wilder_true_range_" ~ p.period ~ ")" -%}
{%- elif kind == 'macd' -%}
  {%- set base = "macd_" ~ p.fast ~ "_" ~ p.slow ~ "_" ~ p.signal -%}
  {%- set signal_state = "ema_" ~ base ~ "__line_" ~ p.signal -%}
  {%- do states.append(["ema_close_" ~ p.fast, "ema", "close", p.fast, 1]) -%}
  {%- do states.append(["ema_close_" ~ p.slow, "ema", "close", p.slow, 1]) -%}
  {%- do s2.append([base ~ "__line", "seeded_mean_final(state__ema_close_" ~ p.fast ~ ") - seeded_mean_final(state__ema_close_" ~ p.slow ~ ")"]) -%}
  {%- do states.append([signal_state, "ema", base ~ "__line", p.signal, 2]) -%}
  {%- set signal = "seeded_mean_final(state__" ~ signal_state ~ ")" -%}
  {%- set final = {'line': base ~ "__line", 'signal': signal, 'hist': base ~ "__line - " ~ signal}[p.output] -%}
{%- elif kind == 'bollinger' -%}
  {%- set base = "bollinger_" ~ p.period -%}
  {%- do s1.append([base ~ "__mean", "avg(close) over " ~ rolling(p.period)]) -%}
  {%- do s1.append([base ~ "__deviation", "stddev_pop(close) over " ~ rolling(p.period)]) -%}
  {%- set upper = "(" ~ base ~ "__mean + " ~ p.width ~ " * " ~ base ~ "__deviation)" -%}
  {%- set lower = "(" ~ base ~ "__mean - " ~ p.width ~ " * " ~ base ~ "__deviation)" -%}
  {%- set value = {'upper': upper, 'lower': lower, 'pctb': "(close - " ~ lower ~ ") / nullif(" ~ upper ~ " - " ~ lower ~ ", 0)"}[p.output] -%}
  {%- set final = "case when bar_number >= " ~ p.period ~ " then " ~ value ~ " end" -%}
{%- elif kind == 'realised_vol' -%}
  {%- do s1.append([name, "case when bar_number >= " ~ (p.period + 1) ~ " then stddev_pop(log_return) over " ~ rolling(p.period) ~ " end"]) -%}
  {%- set final = name -%}
{%- elif kind == 'volume_zscore' -%}
  {%- set base = "volume_" ~ p.period -%}
  {%- do s1.append([base ~ "__mean", "avg(volume) over " ~ rolling(p.period)]) -%}
  {%- do s1.append([base ~ "__deviation", "stddev_pop(volume) over " ~ rolling(p.period)]) -%}
  {%- set final = "case when bar_number >= " ~ p.period ~ " then (volume - " ~ base ~ "__mean) / nullif(" ~ base ~ "__deviation, 0) end" -%}
{%- elif kind == 'pivots' -%}
  {%- set base = "pivots_" ~ p.period -%}
  {%- do s1.append([base ~ "__high", "max(high) over " ~ rolling(p.period)]) -%}
  {%- do s1.append([base ~ "__low", "min(low) over " ~ rolling(p.period)]) -%}
  {%- set pivot = "((" ~ base ~ "__high + " ~ base ~ "__low + close) / 3.0)" -%}
  {%- set value = {'pivot': pivot, 'resistance': "2.0 * " ~ pivot ~ " - " ~ base ~ "__low", 'support': "2.0 * " ~ pivot ~ " - " ~ base ~ "__high"}[p.output] -%}
  {%- set final = "case when bar_number >= " ~ p.period ~ " then " ~ value ~ " end" -%}
{%- elif kind == 'correlation' -%}
  {%- do s1.append([name, "case when count(log_return) over " ~ rolling(p.period) ~ " = " ~ p.period ~ " and count(reference_log_return) over " ~ rolling(p.period) ~ " = " ~ p.period ~ " then corr(log_return, reference_log_return) over " ~ rolling(p.period) ~ " end"]) -%}
  {%- set final = name -%}
{%- elif kind == 'volume_profile' -%}
  {%- set base = "volume_profile_" ~ p.period ~ "_" ~ p.bins -%}
  {%- set w = rolling(p.period) -%}
  {%- do s1.append([base ~ "__profile", "case when bar_number >= " ~ p.period ~ " and is_emitted then volume_profile(array_agg(high) over " ~ w ~ ", array_agg(low) over " ~ w ~ ", array_agg(close) over " ~ w ~ ", array_agg(volume) over " ~ w ~ ", " ~ p.bins ~ ", " ~ p.value_area ~ ") end"]) -%}
  {%- set final = base ~ "__profile[" ~ {'poc': 1, 'va_low': 2, 'va_high': 3}[p.output] ~ "]" -%}
{%- elif kind == 'book_imbalance' -%}
  {%- set final = "(book_bid_size - book_ask_size) / nullif(book_bid_size + book_ask_size, 0)" -%}
{%- elif kind == 'book_spread' -%}
  {%- set final = "(book_best_ask - book_best_bid) / ((book_best_ask + book_best_bid) / 2.0)" -%}
{%- else -%}
  {{ exceptions.raise_compiler_error("feature " ~ name ~ ": indicator " ~ kind ~ " has no SQL rendering") }}
{%- endif -%}
{{ return({'s1': s1, 's2': s2, 'states': states, 'final': final}) }}
{%- endmacro %}

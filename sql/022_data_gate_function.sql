-- The data gate as a predicate for SQL consumers (dbt staging models, the executor's warm-up reads):
-- true only when the (instrument, UTC day) cell holding `at` was validated and passed.
--   select ... from bars_1m b where data_gate_passed('bars_1m', b.instrument_id, b.bar_at)
-- A plain SQL function of one query, so the planner can inline it.
create function data_gate_passed(target text, instrument integer, at timestamptz) returns boolean
language sql stable parallel safe as $$
    select exists (
        select 1 from data_gate g
        where g.target_table = target and g.instrument_id = instrument
          and g.day = (at at time zone 'UTC')::date and g.status = 'passed'
    )
$$;
grant execute on function data_gate_passed(text, integer, timestamptz) to tradeloom_writer, tradeloom_executor;

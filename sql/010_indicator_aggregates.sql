-- Exact recursive indicators as aggregates, used as running window aggregates by the dbt features
-- model (`over (... rows between unbounded preceding and current row)`). Both seed with the SMA of the
-- first `period` non-null inputs (TA-Lib's convention), then recurse; the arithmetic matches
-- tradeloom/features/online.py operation for operation so batch and online agree bit for bit.
-- State: {inputs seen, running value, period}. Strict: NULL inputs leave the state untouched.
create function ema_step(state double precision[], x double precision, period integer)
returns double precision[] language plpgsql immutable strict parallel safe as $$
declare
    seen double precision := state[1] + 1;
    value double precision := state[2];
begin
    if seen <= period then
        value := value + x;
        if seen = period then
            value := value / period;
        end if;
    else
        value := value + (2.0::double precision / (period + 1)) * (x - value);
    end if;
    return array[seen, value, period];
end
$$;

create function wilder_step(state double precision[], x double precision, period integer)
returns double precision[] language plpgsql immutable strict parallel safe as $$
declare
    seen double precision := state[1] + 1;
    value double precision := state[2];
begin
    if seen <= period then
        value := value + x;
        if seen = period then
            value := value / period;
        end if;
    else
        value := (value * (period - 1) + x) / period;
    end if;
    return array[seen, value, period];
end
$$;

create function seeded_mean_final(state double precision[])
returns double precision language sql immutable strict parallel safe as $$
    select case when state[3] > 0 and state[1] >= state[3] then state[2] end
$$;

create aggregate ema(double precision, integer) (
    sfunc = ema_step, stype = double precision[], finalfunc = seeded_mean_final, initcond = '{0,0,0}'
);
create aggregate wilder_mean(double precision, integer) (
    sfunc = wilder_step, stype = double precision[], finalfunc = seeded_mean_final, initcond = '{0,0,0}'
);
comment on aggregate ema(double precision, integer) is
    'EMA with alpha 2/(period+1), seeded with the SMA of the first period inputs (TA-Lib EMA).';
comment on aggregate wilder_mean(double precision, integer) is
    'Wilder smoothing (alpha 1/period) seeded with the SMA of the first period inputs (TA-Lib RSI/ATR).';

-- Resumable forms of the recursive aggregates in 010 for incremental feature builds: they return the
-- whole state {inputs seen, running value, period} instead of the value, and start from a `seed`
-- state (a state stored with an earlier row) instead of the empty one, so an incremental build runs
-- the recursion over the new bars only. The arithmetic is ema_step / wilder_step's, operation for
-- operation, so resuming from a stored state gives bit-for-bit the value of a run over the whole
-- series; seeded_mean_final (010) turns a state into the indicator value.
-- Not strict: the first call replaces the NULL state with the seed (or the empty state when the seed is
-- NULL); a NULL input leaves the state untouched, as the strict aggregates in 010 do.
create function ema_resume_step(state double precision[], x double precision, period integer,
                                seed double precision[])
returns double precision[] language plpgsql immutable parallel safe as $$
declare
    seen double precision;
    value double precision;
begin
    if state is null then
        state := coalesce(seed, array[0, 0, period]::double precision[]);
    end if;
    if x is null then
        return state;
    end if;
    seen := state[1] + 1;
    value := state[2];
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

create function wilder_resume_step(state double precision[], x double precision, period integer,
                                   seed double precision[])
returns double precision[] language plpgsql immutable parallel safe as $$
declare
    seen double precision;
    value double precision;
begin
    if state is null then
        state := coalesce(seed, array[0, 0, period]::double precision[]);
    end if;
    if x is null then
        return state;
    end if;
    seen := state[1] + 1;
    value := state[2];
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

create aggregate ema_state(double precision, integer, double precision[]) (
    sfunc = ema_resume_step, stype = double precision[]
);
create aggregate wilder_state(double precision, integer, double precision[]) (
    sfunc = wilder_resume_step, stype = double precision[]
);
comment on aggregate ema_state(double precision, integer, double precision[]) is
    'State {seen, value, period} of ema(x, period) continued from a seed state; seeded_mean_final gives the EMA.';
comment on aggregate wilder_state(double precision, integer, double precision[]) is
    'State {seen, value, period} of wilder_mean(x, period) continued from a seed state; seeded_mean_final gives the value.';

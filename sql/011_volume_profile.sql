-- Rolling volume profile over one window (arrays oldest first): volume by typical-price bin over
-- [lowest low, highest high]; returns {point of control, value area low, value area high}. Mirrors
-- tradeloom.features.online.volume_profile operation for operation.
create function volume_profile(
    highs double precision[], lows double precision[], closes double precision[],
    volumes double precision[], bins integer, value_area double precision
) returns double precision[] language plpgsql immutable strict parallel safe as $$
declare
    lowest double precision;
    highest double precision;
    total double precision := 0;
    width double precision;
    filled double precision[];
    taken boolean[];
    typical double precision;
    slot integer;
    best integer;
    poc integer;
    covered double precision := 0;
    first_bin integer;
    last_bin integer;
begin
    -- Loops rather than a query over unnest(): no SPI round trip per call.
    lowest := lows[1];
    highest := highs[1];
    for i in 1 .. cardinality(volumes) loop
        total := total + volumes[i];
        lowest := least(lowest, lows[i]);
        highest := greatest(highest, highs[i]);
    end loop;
    if not highest > lowest or not total > 0 then
        return array[null, null, null]::double precision[];
    end if;
    width := (highest - lowest) / bins;
    filled := array_fill(0::double precision, array[bins]);
    taken := array_fill(false, array[bins]);
    for i in 1 .. cardinality(volumes) loop
        typical := (highs[i] + lows[i] + closes[i]) / 3.0;
        -- Clamped: a bar whose high < low would otherwise fall outside the range.
        slot := greatest(0, least(floor((typical - lowest) / (highest - lowest) * bins)::integer, bins - 1));
        filled[slot + 1] := filled[slot + 1] + volumes[i];
    end loop;
    loop
        best := null;
        for i in 1 .. bins loop
            if not taken[i] and (best is null or filled[i] > filled[best]) then
                best := i;
            end if;
        end loop;
        taken[best] := true;
        if poc is null then
            poc := best - 1;
            first_bin := poc;
            last_bin := poc;
        end if;
        covered := covered + filled[best];
        first_bin := least(first_bin, best - 1);
        last_bin := greatest(last_bin, best - 1);
        exit when covered >= value_area * total;
    end loop;
    return array[lowest + (poc + 0.5) * width, lowest + first_bin * width, lowest + (last_bin + 1) * width];
end
$$;

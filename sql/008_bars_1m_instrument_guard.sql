-- bars_1m's foreign key to instruments costs ~10 s of server CPU per million
-- bulk-loaded rows (one SPI lookup + key-share row lock per row: 2/3 of the whole ingest, measured in
-- bench/ingest.py, issue 2). Replace it by the two halves it enforces, done once per batch / per delete:
--  * inserts: every writer takes ids from `instruments` in its own transaction (pipelines.ingest via
--    store.instrument_ids(lock=True), a key-share lock per instrument; the executor's insert selects
--    instrument_id from instruments, and instruments are not deleted while an executor trades them);
--  * deletes / id changes of an instrument that still has minute bars are refused by the trigger below.
-- bars_1h / bars_1d keep their foreign keys (small batches).
alter table bars_1m drop constraint bars_1m_instrument_id_fkey;

create function instruments_keep_bars_1m() returns trigger language plpgsql as $$
begin
    if exists (select 1 from bars_1m where instrument_id = old.instrument_id) then
        raise exception using
            errcode = 'foreign_key_violation',
            message = format('instrument %s still has rows in bars_1m; delete them first', old.instrument_id);
    end if;
    return case when tg_op = 'DELETE' then old else new end;
end
$$;

create trigger instruments_keep_bars_1m
    before delete or update of instrument_id on instruments
    for each row execute function instruments_keep_bars_1m();

-- Three roles: the owner runs migrations; the writer (pipelines) reads and writes rows; the executor
-- reads and appends but can never drop or alter tables (it owns nothing).
do $$
begin
    if not exists (select from pg_roles where rolname = 'tradeloom_writer') then
        create role tradeloom_writer login;
    end if;
    if not exists (select from pg_roles where rolname = 'tradeloom_executor') then
        create role tradeloom_executor login;
    end if;
end
$$;

grant usage on schema public to tradeloom_writer, tradeloom_executor;
grant select, insert, update, delete on all tables in schema public to tradeloom_writer;
grant usage, select on all sequences in schema public to tradeloom_writer, tradeloom_executor;
grant select on all tables in schema public to tradeloom_executor;
grant insert, update on bars_1m, order_book_snapshots to tradeloom_executor;
alter default privileges in schema public grant select, insert, update, delete on tables to tradeloom_writer;
alter default privileges in schema public grant select on tables to tradeloom_executor;
alter default privileges in schema public grant usage, select on sequences to tradeloom_writer, tradeloom_executor;

-- The extension is created by the superuser at bootstrap (local cluster) or by the DBA; this
-- makes the requirement explicit and fails early on a server without it.
create extension if not exists timescaledb;

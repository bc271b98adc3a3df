"""Shared fixtures: a private database per test run on the project's local TimescaleDB cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tradeloom.adapters.db import Database, migrate
from tradeloom.adapters.pgcluster import LocalCluster
from tradeloom.settings import PipelineSettings

ROOT = Path(__file__).resolve().parents[1]
DATA_TABLES = ("quarantine", "ingest_batches", "bars_1m", "bars_1h", "bars_1d", "order_book_snapshots",
               "instruments")


@pytest.fixture(scope="session")
def test_settings() -> PipelineSettings:
    """Settings pointing at a database private to this pytest process (parallel runs never collide)."""
    name = f"tradeloom_test_{os.getpid()}"
    return PipelineSettings(home=ROOT / ".loom", database_name=name, database_url=None)


@pytest.fixture(scope="session")
def database(test_settings: PipelineSettings) -> Iterator[Database]:
    cluster = LocalCluster(test_settings.pg_dir)
    cluster.up()
    name = test_settings.database_name
    cluster.psql(f"drop database if exists {name} with (force)")
    cluster.psql(f"create database {name} owner tradeloom_owner")
    cluster.psql("create extension if not exists timescaledb", database=name)
    db = Database(test_settings)
    migrate(db)
    yield db
    cluster.psql(f"drop database if exists {name} with (force)")


@pytest.fixture()
def clean_db(database: Database) -> Database:
    """The test database with every data table emptied."""
    with database.transaction(database.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute(f"truncate {', '.join(DATA_TABLES)} restart identity cascade")
    return database


@pytest.fixture()
def cli_env(database: Database) -> dict[str, str]:
    """Environment for running the `tradeloom` CLI as a subprocess against the test database."""
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env["TRADELOOM_DATABASE_NAME"] = database.settings.database_name
    env["TRADELOOM_HOME"] = str(database.settings.home)
    return env

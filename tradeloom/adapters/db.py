"""Connections to the store and the migration runner."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions

from tradeloom.adapters.pgcluster import LocalCluster
from tradeloom.errors import ConfigError, DatabaseUnavailableError
from tradeloom.settings import PipelineSettings, project_root

log = logging.getLogger(__name__)

Connection = psycopg2.extensions.connection


def redact(url: str) -> str:
    """The URL without its password, safe for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Database:
    """Where the store lives: a DATABASE_URL, or the local cluster with one role per use."""

    settings: PipelineSettings

    @property
    def cluster(self) -> LocalCluster:
        return LocalCluster(self.settings.pg_dir)

    @property
    def is_local(self) -> bool:
        return self.settings.database_url is None

    def url(self, role: str | None = None, database: str | None = None) -> str:
        if self.settings.database_url is not None:
            return self.settings.database_url
        return self.cluster.url(role or self.settings.writer_role, database or self.settings.database_name)

    def connect(self, role: str | None = None, database: str | None = None) -> Connection:
        url = self.url(role, database)
        try:
            conn = psycopg2.connect(url, connect_timeout=5, application_name="tradeloom")
        except psycopg2.OperationalError as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else "no answer"
            raise DatabaseUnavailableError(
                f"database unreachable at {redact(url)}: {reason} (is it running? `tradeloom db up`)"
            ) from error
        return conn

    @contextmanager
    def transaction(self, role: str | None = None) -> Iterator[Connection]:
        conn = self.connect(role)
        try:
            with conn:
                yield conn
        finally:
            conn.close()


MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or project_root() / "sql"
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if not match:
            raise ConfigError(f"migration file name {path.name!r} must look like 001_name.sql")
        found.append(Migration(int(match.group(1)), path))
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"two migrations share a version number in {directory}")
    return found


def migrate(db: Database, directory: Path | None = None) -> list[str]:
    """Apply every migration not yet applied, each in its own transaction. Returns the names applied."""
    applied_now: list[str] = []
    conn = db.connect(db.settings.owner_role)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "create table if not exists schema_migrations ("
                " version int primary key, name text not null, checksum text not null,"
                " applied_at timestamptz not null default now())"
            )
            cur.execute("select version, name, checksum from schema_migrations")
            done = {row[0]: (row[1], row[2]) for row in cur.fetchall()}
        for migration in discover_migrations(directory):
            if migration.version in done:
                name, checksum = done[migration.version]
                if checksum != migration.checksum:
                    raise ConfigError(
                        f"migration {migration.path.name} changed after it was applied as {name}: "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            log.info("applying migration %s", migration.path.name)
            with conn, conn.cursor() as cur:
                cur.execute(migration.sql)
                cur.execute(
                    "insert into schema_migrations (version, name, checksum) values (%s, %s, %s)",
                    (migration.version, migration.path.name, migration.checksum),
                )
            applied_now.append(migration.path.name)
    finally:
        conn.close()
    return applied_now

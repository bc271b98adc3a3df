"""The project-owned PostgreSQL 15 + TimescaleDB cluster under `.loom/pg`.

Each checkout gets its own data directory, socket directory and TCP port (recorded in
`.loom/pg/port`), so two checkouts on one machine never collide. As root, the server runs as the
`postgres` OS user (initdb refuses root).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tradeloom.errors import ConfigError, DatabaseUnavailableError

log = logging.getLogger(__name__)

PG_BIN = Path(os.environ.get("TRADELOOM_PG_BIN", "/usr/lib/postgresql/15/bin"))
DATABASES = ("tradeloom", "mlflow", "airflow")
SUPERUSER = "postgres"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class LocalCluster:
    root: Path

    def __post_init__(self) -> None:
        # Sockets and pg_ctl need absolute paths whatever the caller's working directory.
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def port_file(self) -> Path:
        return self.root / "port"

    @property
    def port(self) -> int:
        if not self.port_file.exists():
            raise DatabaseUnavailableError(
                f"the local cluster in {self.root} was never started: run `tradeloom db up`"
            )
        return int(self.port_file.read_text(encoding="utf-8").strip())

    def url(self, role: str = SUPERUSER, database: str = "tradeloom") -> str:
        return f"postgresql://{role}@/{database}?host={self.socket_dir}&port={self.port}"

    def sqlalchemy_url(self, role: str, database: str) -> str:
        return f"postgresql+psycopg2://{role}@/{database}?host={self.socket_dir}&port={self.port}"

    # -- process control -------------------------------------------------------------------------

    def _as_server_user(self, args: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", SUPERUSER, "--", *args]
        return args

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        log.debug("running %s", " ".join(args))
        return subprocess.run(self._as_server_user(args), check=check, capture_output=True, text=True)

    def is_initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        if not self.is_initialised():
            return False
        result = self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "status"], check=False)
        return result.returncode == 0

    def _check_binaries(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise ConfigError(f"PostgreSQL 15 binaries not found in {PG_BIN}: run `make setup`")
        control = Path("/usr/share/postgresql/15/extension/timescaledb.control")
        if not control.exists():
            raise ConfigError(f"TimescaleDB extension missing ({control}): run `make setup`")

    def _initialise(self) -> None:
        self._check_binaries()
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            server_user = pwd.getpwnam(SUPERUSER)
            for path in (self.root, self.data_dir, self.socket_dir):
                os.chown(path, server_user.pw_uid, server_user.pw_gid)
        self.data_dir.chmod(0o700)
        self._run(
            [str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--locale=C.UTF-8"]
        )
        conf = self.data_dir / "postgresql.auto.conf"
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "shared_preload_libraries": "'timescaledb'",
            "timescaledb.telemetry_level": "off",
            "max_connections": "200",
            "shared_buffers": "'256MB'",
            "max_wal_size": "'2GB'",
            "log_min_messages": "warning",
        }
        with conf.open("a", encoding="utf-8") as handle:
            handle.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def up(self) -> None:
        if not self.is_initialised():
            log.info("initialising cluster in %s", self.data_dir)
            self._initialise()
        if self.is_running():
            return
        port = int(self.port_file.read_text(encoding="utf-8")) if self.port_file.exists() else _free_port()
        if _port_in_use(port):
            port = _free_port()
        self.port_file.write_text(f"{port}\n", encoding="utf-8")
        result = self._run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
             "-o", f"-p {port}", "start"],
            check=False,
        )
        if result.returncode != 0:
            tail = self.log_file.read_text(encoding="utf-8")[-2000:] if self.log_file.exists() else ""
            raise DatabaseUnavailableError(f"could not start the local cluster on port {port}: {tail.strip()}")
        self._bootstrap()

    def down(self) -> None:
        if self.is_running():
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])

    def destroy(self) -> None:
        self.down()
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-c", sql],
            check=False, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise DatabaseUnavailableError(f"psql failed on {database}: {result.stderr.strip()}")
        return result.stdout

    def _bootstrap(self) -> None:
        """Roles and databases; the superuser part that migrations cannot do."""
        roles = {
            "tradeloom_owner": "LOGIN CREATEROLE",
            "tradeloom_writer": "LOGIN",
            "tradeloom_executor": "LOGIN",
        }
        for role, options in roles.items():
            exists = self.psql(f"select 1 from pg_roles where rolname = '{role}'").strip()
            if not exists:
                self.psql(f"create role {role} {options}")
        for database in DATABASES:
            exists = self.psql(f"select 1 from pg_database where datname = '{database}'").strip()
            if not exists:
                self.psql(f"create database {database} owner tradeloom_owner")
        self.psql("create extension if not exists timescaledb", database="tradeloom")

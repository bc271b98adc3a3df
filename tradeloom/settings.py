"""Settings for the batch side (pydantic-settings, env prefix TRADELOOM_, .env supported).

Build settings inside `main()` or a task, never at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def project_root(start: Path | None = None) -> Path:
    """The checkout holding this project: the nearest parent with a `pyproject.toml` naming tradeloom."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        marker = candidate / "pyproject.toml"
        if marker.is_file() and 'name = "tradeloom"' in marker.read_text(encoding="utf-8"):
            return candidate
    return here


class PipelineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRADELOOM_", env_file=".env", extra="ignore")

    home: Path = Field(default_factory=lambda: project_root() / ".loom")
    # When set, a real PostgreSQL/TimescaleDB server is used instead of the local cluster under .loom/pg.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("TRADELOOM_DATABASE_URL", "DATABASE_URL")
    )
    database_name: str = "tradeloom"
    # Which role batch jobs connect as on the local cluster.
    writer_role: str = "tradeloom_writer"
    owner_role: str = "tradeloom_owner"
    executor_role: str = "tradeloom_executor"
    synthetic_seed: int = 7
    synthetic_instruments: int = 5
    synthetic_days: int = 10

    @property
    def pg_dir(self) -> Path:
        return self.home / "pg"

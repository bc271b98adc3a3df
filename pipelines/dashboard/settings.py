"""Dashboard settings (pydantic-settings, env prefix TRADELOOM_DASHBOARD_, .env supported).

Safe defaults: bound to 127.0.0.1, controls refused until a password hash or a token is configured. The
executor's control files are found the way the executor finds them (its state root and kill-switch file
are read from the executor's own TRADELOOM_EXECUTOR_* variables), without importing the executor.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tradeloom.errors import ConfigError
from tradeloom.settings import project_root

MODES = ("replay", "paper", "live", "shadow", "backtest")


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRADELOOM_DASHBOARD_", env_file=".env", extra="ignore",
                                      populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=1, le=65535)
    strategy: str | None = None  # None: the strategy with the latest decision in the journal
    mode: str | None = None
    username: str = "operator"
    # "scrypt$n$r$p$salt$hash" from `tradeloom dashboard hash-password`; unset = no password login.
    password_hash: SecretStr | None = None
    token: SecretStr | None = None  # "Authorization: Bearer <token>" for scripts; unset = no token login
    # Signs session cookies; unset = a random secret per process (sessions end when the dashboard restarts).
    session_secret: SecretStr | None = None
    session_hours: float = Field(default=12.0, gt=0)
    read_requires_login: bool = False
    timezone: str = "Asia/Kolkata"  # the exchange's: a "day" of PnL is a session day there
    refresh_seconds: float = Field(default=2.0, gt=0)
    home: Path = Field(default_factory=lambda: project_root() / ".loom",
                       validation_alias=AliasChoices("TRADELOOM_DASHBOARD_HOME", "TRADELOOM_HOME"))
    # The executor's home when it differs from this one (the systemd unit sets TRADELOOM_EXECUTOR_HOME): the
    # control files must be the ones the executor watches, or a kill switch pressed here stops nothing.
    executor_home: Path | None = Field(
        default=None, validation_alias=AliasChoices("TRADELOOM_DASHBOARD_EXECUTOR_HOME", "TRADELOOM_EXECUTOR_HOME"))
    executor_state_root: Path | None = Field(
        default=None, validation_alias=AliasChoices("TRADELOOM_DASHBOARD_EXECUTOR_STATE_ROOT",
                                                    "TRADELOOM_EXECUTOR_STATE_ROOT"))
    executor_kill_switch_file: Path | None = Field(
        default=None, validation_alias=AliasChoices("TRADELOOM_DASHBOARD_EXECUTOR_KILL_SWITCH_FILE",
                                                    "TRADELOOM_EXECUTOR_KILL_SWITCH_FILE"))

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str | None) -> str | None:
        if value is not None and value not in MODES:
            raise ConfigError(f"dashboard mode={value!r}: expected one of {', '.join(MODES)}")
        return value

    @field_validator("password_hash")
    @classmethod
    def _hash_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("scrypt$", "pbkdf2_sha256$")):
            raise ConfigError("TRADELOOM_DASHBOARD_PASSWORD_HASH: expected the output of `tradeloom dashboard "
                              "hash-password` (starts with 'scrypt$'), not a plain password")
        return value

    @field_validator("token")
    @classmethod
    def _token_strength(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ConfigError("TRADELOOM_DASHBOARD_TOKEN: expected at least 16 characters, got "
                              f"{len(value.get_secret_value())}")
        return value

    @property
    def controls_enabled(self) -> bool:
        return self.password_hash is not None or self.token is not None

    def state_dir(self, strategy: str) -> Path:
        """The executor's state directory for `strategy` (mirrors ExecutorSettings.state_dir)."""
        return (self.executor_state_root or (self.executor_home or self.home) / "executor") / strategy

    def kill_switch_path(self, strategy: str) -> Path:
        return self.executor_kill_switch_file or self.state_dir(strategy) / "KILL"

    def pause_path(self, strategy: str) -> Path:
        return self.state_dir(strategy) / "PAUSE"

"""Kite adapter configuration: frozen, secrets as SecretStr, safe defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class KiteConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: str
    api_secret: SecretStr
    # Today's session token; when None the adapter reads `token_file` (written by the login helper).
    access_token: SecretStr | None = None
    token_file: Path | None = None
    root: str = "https://api.kite.trade"
    ws_root: str = "wss://ws.kite.trade"
    variety: str = "regular"
    timeout_seconds: float = Field(default=7.0, gt=0)
    # Kite allows 10 order requests per second and 10 reads per second per API key.
    orders_per_second: float = Field(default=10.0, gt=0)
    # Also per minute: the venue's published cap (set it to your account's); None: only the per-second one.
    orders_per_minute: int | None = Field(default=200, ge=1)
    reads_per_second: float = Field(default=10.0, gt=0)
    history_per_second: float = Field(default=3.0, gt=0)  # historical candles have their own, lower limit
    read_retry_attempts: int = Field(default=4, ge=1, le=10)
    backoff_seconds: float = Field(default=0.25, ge=0)
    max_backoff_seconds: float = Field(default=4.0, ge=0)
    reconnect_max_delay_seconds: int = Field(default=5, ge=5)
    # The SDK's own reconnect attempts (at most 300) before it gives up; then the stream starts afresh.
    reconnect_max_tries: int = Field(default=300, ge=1, le=300)

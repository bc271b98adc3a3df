"""Where the daily broker session token lives between the login helper and the executor.

Kite access tokens expire every morning (about 06:00 IST); the login helper writes the new one to a
file under `.loom/secrets/`, and the adapters re-read it when the broker rejects the old one, so a
running executor rolls over without a restart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from tradeloom.broker import TokenExpiredError

TokenProvider = Callable[[], SecretStr]


@dataclass(frozen=True)
class TokenFile:
    path: Path

    def write(self, access_token: SecretStr, user_id: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "access_token": access_token.get_secret_value(),
            "user_id": user_id,
            "login_at": datetime.now(UTC).isoformat(),
        }
        temporary = self.path.with_suffix(".tmp")
        # Owner-only from the first byte: the token is a credential.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
        temporary.replace(self.path)

    def read(self) -> SecretStr:
        try:
            payload = json.loads(self.path.read_text(encoding="utf-8"))
            return SecretStr(str(payload["access_token"]))
        except (OSError, ValueError, KeyError) as error:
            raise TokenExpiredError(
                f"token file {self.path}: no readable access_token ({type(error).__name__}); "
                "expected a file written by `python -m executor login kite`"
            ) from error


def static_token(token: SecretStr) -> TokenProvider:
    return lambda: token

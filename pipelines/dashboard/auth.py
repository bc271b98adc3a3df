"""Who may press the buttons: scrypt password hashes, bearer tokens and HMAC-signed session cookies.

Standard library only (hashlib.scrypt, hmac): no extra dependency in the dashboard's venv.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from tradeloom.errors import ConfigError

# scrypt cost: n=2**14, r=8 takes ~50 ms and 16 MiB here, which is plenty for an operator login.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
PBKDF2_ITERATIONS = 600_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """'scrypt$n$r$p$salt$hash' for TRADELOOM_DASHBOARD_PASSWORD_HASH."""
    if len(password) < 8:
        raise ConfigError(f"password: expected at least 8 characters, got {len(password)}")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check against a 'scrypt$...' or 'pbkdf2_sha256$iterations$salt$hash' string."""
    parts = stored.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt, expected = _unb64(parts[4]), _unb64(parts[5])
            actual = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(expected),
                                    maxmem=256 * 1024 * 1024)
        elif parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            salt, expected = _unb64(parts[2]), _unb64(parts[3])
            actual = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(parts[1]), len(expected))
        else:
            raise ConfigError("password hash: expected 'scrypt$n$r$p$salt$hash' or "
                              f"'pbkdf2_sha256$iterations$salt$hash', got a {parts[0]!r} string")
    except ValueError as error:
        raise ConfigError(f"password hash: malformed {parts[0]!r} string ({error})") from error
    return hmac.compare_digest(actual, expected)


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class Session:
    user: str
    expires_at: float


class SessionSigner:
    """Cookie value = base64(json payload) + '.' + base64(HMAC-SHA256): tamper-evident, expiring, stateless."""

    def __init__(self, secret: bytes, max_age_seconds: float) -> None:
        if len(secret) < 16:
            raise ConfigError(f"session secret: expected at least 16 bytes, got {len(secret)}")
        self._secret = secret
        self.max_age_seconds = max_age_seconds

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def sign(self, user: str, now: float | None = None) -> str:
        expires = (time.time() if now is None else now) + self.max_age_seconds
        payload = _b64(json.dumps({"user": user, "exp": expires}).encode())
        return f"{payload}.{self._mac(payload)}"

    def verify(self, cookie: str, now: float | None = None) -> Session | None:
        payload, _, mac = cookie.partition(".")
        if not payload or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(str(data["user"]), float(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires_at > (time.time() if now is None else now) else None


class LoginThrottle:
    """At most `limit` failed logins per client address per `window` seconds (slows password guessing)."""

    def __init__(self, limit: int = 5, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, list[float]] = {}

    def blocked(self, client: str, now: float | None = None) -> bool:
        moment = time.monotonic() if now is None else now
        recent = [t for t in self._failures.get(client, []) if moment - t < self.window]
        self._failures[client] = recent
        return len(recent) >= self.limit

    def failed(self, client: str, now: float | None = None) -> None:
        self._failures.setdefault(client, []).append(time.monotonic() if now is None else now)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

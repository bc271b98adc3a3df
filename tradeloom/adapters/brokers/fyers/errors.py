"""Fyers returns error dicts instead of raising: translate them to tradeloom's exceptions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tradeloom.broker import TokenExpiredError
from tradeloom.errors import InputError, OrderRejectedError, TradeloomError, TransientBrokerError

# Fyers v3 error codes for a dead session (-8 expired, -15 invalid, -16 cannot authenticate, -17 invalid or expired).
AUTH_CODES = frozenset({-8, -15, -16, -17})
# HTTP-like codes the API or the SDK puts in "code" when the request may succeed later; -99 is the
# SDK's own code for "no response" (timeout, connection refused or dropped).
TRANSIENT_CODES = frozenset({-99, 408, 429, 500, 502, 503, 504})


def translate(response: Mapping[str, Any], action: str, is_order: bool) -> TradeloomError:
    code = int(response.get("code") or 0)
    message = str(response.get("message") or "")
    if code in AUTH_CODES:
        return TokenExpiredError(
            f"fyers {action}: session rejected (code {code}: {message}); expected a valid access token"
        )
    if code in TRANSIENT_CODES:
        return TransientBrokerError(f"fyers {action}: broker unavailable (code {code}: {message}); retry later")
    if is_order:
        return OrderRejectedError(f"fyers {action}: refused (code {code}: {message})")
    return InputError(f"fyers {action}: refused (code {code}: {message}); expected a valid request")


def is_ok(response: Any) -> bool:
    return isinstance(response, Mapping) and response.get("s") == "ok"

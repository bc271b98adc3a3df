"""Kite SDK exceptions translated to tradeloom's exceptions (grouped by what the operator must do)."""

from __future__ import annotations

import requests
from kiteconnect import exceptions as kite_exceptions

from tradeloom.broker import TokenExpiredError
from tradeloom.errors import ConfigError, OrderRejectedError, TradeloomError, TransientBrokerError

# HTTP codes after which the same request may succeed later.
TRANSIENT_HTTP_CODES = frozenset({408, 425, 429, 500, 502, 503, 504})


def translate(error: Exception, action: str) -> TradeloomError:
    """The tradeloom exception for an SDK/transport error during `action` (raise it `from error`).

    Messages carry the action, the HTTP code and the broker's text (which never holds credentials).
    """
    if isinstance(error, kite_exceptions.TokenException):
        return TokenExpiredError(
            f"kite {action}: session rejected (HTTP {error.code}: {error}); expected a valid access token, "
            "run `python -m executor login kite`"
        )
    if isinstance(error, kite_exceptions.PermissionException):
        return ConfigError(
            f"kite {action}: permission denied (HTTP {error.code}: {error}); check the app's permissions"
        )
    if isinstance(error, kite_exceptions.KiteException):
        code = int(getattr(error, "code", 500))
        if code in TRANSIENT_HTTP_CODES or isinstance(
            error, kite_exceptions.NetworkException | kite_exceptions.DataException
        ):
            return TransientBrokerError(f"kite {action}: broker unavailable (HTTP {code}: {error}); retry later")
        return OrderRejectedError(f"kite {action}: refused (HTTP {code} {type(error).__name__}: {error})")
    if isinstance(error, requests.Timeout):
        return TransientBrokerError(f"kite {action}: no reply within the timeout ({type(error).__name__})")
    if isinstance(error, requests.RequestException):
        return TransientBrokerError(f"kite {action}: network error ({type(error).__name__})")
    return TransientBrokerError(f"kite {action}: malformed reply ({type(error).__name__}: {error})")

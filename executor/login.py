"""The Kite Connect daily login: request token → access token (checksum exchange), saved for the executor.

Kite sessions end every morning. The operator opens the login URL, signs in, copies the
`request_token` from the redirect, and runs `python -m executor login kite --request-token ...`;
the running executor picks the new token up from the token file on its next broker call.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from tradeloom.errors import ConfigError

log = logging.getLogger(__name__)
DEFAULT_TOKEN_FILE = Path(".loom/secrets/kite_token.json")


def kite_login_url(api_key: str) -> str:
    from kiteconnect import KiteConnect

    return str(KiteConnect(api_key=api_key).login_url())


def kite_login(
    api_key: str,
    api_secret: SecretStr,
    request_token: str,
    token_file: Path,
    root: str = "https://api.kite.trade",
    timeout_seconds: float = 7.0,
) -> str:
    """Exchange `request_token` for today's access token, write it to `token_file`; returns the user id."""
    from kiteconnect import KiteConnect

    from tradeloom.adapters.brokers.kite.errors import translate
    from tradeloom.adapters.brokers.tokens import TokenFile

    client = KiteConnect(api_key=api_key, root=root, timeout=timeout_seconds)
    try:
        session = client.generate_session(request_token, api_secret=api_secret.get_secret_value())
    except Exception as error:
        raise translate(error, "login") from error
    user_id = str(session.get("user_id", ""))
    TokenFile(token_file).write(SecretStr(str(session["access_token"])), user_id)
    log.info("kite login: session stored for user %s in %s", user_id, token_file)
    return user_id


login_app = typer.Typer(help="Broker logins (daily session tokens).", no_args_is_help=True)


@login_app.command("kite")
def login_kite_command(
    request_token: Annotated[str, typer.Option(help="The request_token from the redirect after signing in.")] = "",
    token_file: Annotated[Path, typer.Option(help="Where today's access token is written (mode 600).")] = (
        DEFAULT_TOKEN_FILE
    ),
    root: Annotated[str, typer.Option(help="Kite API root (a fake server's in tests).")] = "https://api.kite.trade",
) -> None:
    """Exchange a Kite request token for today's access token (api key/secret from the environment)."""
    api_key = os.environ.get("TRADELOOM_KITE_API_KEY", "")
    api_secret = os.environ.get("TRADELOOM_KITE_API_SECRET", "")
    if not api_key or not api_secret:
        raise ConfigError("TRADELOOM_KITE_API_KEY / TRADELOOM_KITE_API_SECRET unset; expected the app's key and secret")
    if not request_token:
        typer.echo(f"Sign in at: {kite_login_url(api_key)}")
        request_token = typer.prompt("request_token")
    user_id = kite_login(api_key, SecretStr(api_secret), request_token, token_file, root=root)
    typer.echo(f"kite session stored for {user_id} in {token_file}")

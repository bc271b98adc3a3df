"""API secrets and access tokens never appear in logs, exception messages or reprs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from executor.login import kite_login
from tests.live.conftest import FAST, IntentFactory
from tradeloom.adapters.brokers.fakes.faults import Fault
from tradeloom.adapters.brokers.fakes.fyers_server import FakeFyersServer
from tradeloom.adapters.brokers.fakes.kite_server import FakeKiteServer
from tradeloom.adapters.brokers.fyers.config import FyersConfig
from tradeloom.adapters.brokers.fyers.execution import FyersBroker
from tradeloom.adapters.brokers.kite.config import KiteConfig
from tradeloom.adapters.brokers.kite.execution import KiteBroker
from tradeloom.errors import TradeloomError


def _session_errors(
    broker: KiteBroker | FyersBroker, server: FakeKiteServer | FakeFyersServer, intent: IntentFactory
) -> list[str]:
    """Drive a session through every fault; return the text of every error it raised."""
    texts: list[str] = []
    broker.place(intent())
    for operation, fault in [
        ("place", Fault.HTTP_502),
        ("place", Fault.TIMEOUT_BEFORE),
        ("place", Fault.HTTP_429),
        ("read", Fault.HTTP_500),
        ("place", Fault.DROP_CONNECTION),
        ("place", Fault.TOKEN_EXPIRED),
    ]:
        server.faults.arm(operation, fault, times=5 if operation == "read" else 1)
        try:
            broker.place(intent()) if operation == "place" else broker.orders_today()
        except TradeloomError as error:
            chain: BaseException | None = error
            while chain is not None:
                texts.append(f"{type(chain).__name__}: {chain!s} {chain!r}")
                chain = chain.__cause__ or chain.__context__
        server.faults.clear()
    server.expire_tokens()
    try:
        broker.positions()
    except TradeloomError as error:
        texts.append(f"{error!s} {error!r} {error.__cause__!r}")
    texts.append(repr(broker))
    texts.append(repr(broker.config))
    texts.append(str(broker.config.model_dump()))
    return texts


def test_kite_session_secret_and_token_absent_from_logs_and_errors(
    kite_server: FakeKiteServer, tmp_path: Path, intent: IntentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "kite_token.json"
    kite_login(
        kite_server.api_key,
        SecretStr(kite_server.api_secret),
        kite_server.new_request_token(),
        token_file,
        root=kite_server.root,
    )
    config = KiteConfig(
        api_key=kite_server.api_key,
        api_secret=SecretStr(kite_server.api_secret),
        token_file=token_file,
        root=kite_server.root,
        **FAST,
    )
    broker = KiteBroker(config)
    token = broker.current_token()
    texts = _session_errors(broker, kite_server, intent)
    assert len(texts) >= 8
    everything = caplog.text + "\n".join(texts)
    assert "kite place: outcome unknown" in caplog.text  # the logs were captured at all
    for secret in (kite_server.api_secret, token):
        assert secret not in everything


def test_fyers_session_token_absent_from_logs_errors_and_sdk_files(
    fyers_server: FakeFyersServer, fyers_config: FyersConfig, intent: IntentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = FyersBroker(fyers_config)
    token = broker.current_token()
    texts = _session_errors(broker, fyers_server, intent)
    # The SDK's loggers are process-wide: their files sit in the log_dir of the first FyersModel made
    # in this process, so read the files their handlers actually write.
    files = {
        Path(handler.baseFilename)
        for name in ("FyersAPI", "FyersAPIRequest", "FyersDataSocket")
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, logging.FileHandler)
    }
    for handler in (h for name in ("FyersAPI", "FyersAPIRequest") for h in logging.getLogger(name).handlers):
        handler.flush()
    sdk_logs = "".join(path.read_text() for path in files if path.exists())
    assert "orders/sync" in sdk_logs  # the SDK did write its files there
    everything = caplog.text + "\n".join(texts) + sdk_logs
    for secret in (fyers_config.secret_key.get_secret_value(), token):
        assert secret not in everything

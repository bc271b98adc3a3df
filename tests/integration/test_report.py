"""The daily email through a real SMTP server (aiosmtpd on 127.0.0.1), built from the real database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from pipelines.drift import DriftSettings, run_drift
from pipelines.report import ReportSettings, send_report
from pipelines.smtp_capture import captured_smtp
from tests.integration.monitoring_support import STRATEGY, clear_journal, load_aapl, write_journal
from tradeloom.adapters.db import Database
from tradeloom.settings import project_root


@pytest.fixture(scope="module")
def day_end(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[datetime]:
    registry = tmp_path_factory.mktemp("mlflow") / "registry.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRADELOOM_MLFLOW_TRACKING_URI", f"sqlite:///{registry}")
        last = load_aapl(database)
        yield (last + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def test_send_report_smtp_server_receives_body_recipients_and_drift_attachment(
        database: Database, day_end: datetime, tmp_path: Path) -> None:
    clear_journal(database)
    write_journal(database, day_end, prophetic=True, slippage_bps=2.0, fill_fraction=1.0)
    drift = run_drift(database, day_end, DriftSettings(
        train_config=project_root() / "configs" / "direction_daily.yaml", min_decisions=5), report_dir=tmp_path)
    assert drift.report_path is not None
    day = (day_end - timedelta(days=1)).date()
    recipients = ["quant@example.test", "ops@example.test"]
    with captured_smtp() as inbox:
        settings = ReportSettings(recipients=recipients, sender="tradeloom@example.test", smtp_port=inbox.port)
        prepared = send_report(database, day, settings, report_dir=tmp_path)
        arrived = inbox.wait_for(1)
    assert len(arrived) == 1
    envelope = arrived[0]
    assert envelope.sender == "tradeloom@example.test"
    assert sorted(envelope.recipients) == sorted(recipients)
    message = BytesParser(policy=policy.default).parsebytes(envelope.content)
    assert "PnL 1,250.00" in message["Subject"] and "4 orders" in message["Subject"]
    assert drift.status in message["Subject"]
    body = message.get_body(preferencelist=("html",))
    assert body is not None
    html = body.get_content()
    for expected in ("PnL today: <b>1,250.00</b>", "filled", "data_drift", "performance", "@champion: version none",
                     "/dags/daily_report", "#/models/tradeloom-direction_daily"):
        assert expected in html, expected
    attachments = list(message.iter_attachments())
    assert [part.get_filename() for part in attachments] == [drift.report_path.name]
    assert attachments[0].get_content_type() == "text/html"
    payload = attachments[0].get_payload(decode=True)
    assert payload == drift.report_path.read_bytes()
    assert Path(prepared["eml_path"]).is_file()
    with database.transaction() as conn, conn.cursor() as cur:
        cur.execute("select sent, recipients, summary ->> 'drift_status' from daily_reports "
                    "where report_date = %s and strategy = %s", (day, STRATEGY))
        row = cur.fetchone()
    assert row == (True, recipients, drift.status)


def test_send_report_no_journal_says_no_orders_and_no_drift(database: Database, day_end: datetime,
                                                             tmp_path: Path) -> None:
    clear_journal(database)
    day = (day_end + timedelta(days=400)).date()
    with captured_smtp() as inbox:
        send_report(database, day, ReportSettings(smtp_port=inbox.port), report_dir=tmp_path)
        message = BytesParser(policy=policy.default).parsebytes(inbox.wait_for(1)[0].content)
    assert "drift no drift run" in message["Subject"] and "PnL -" in message["Subject"]
    assert list(message.iter_attachments()) == []
    body = message.get_body(preferencelist=("html",))
    assert body is not None and "no orders" in body.get_content()


def test_demo_report_saves_the_message_the_local_server_received(database: Database, day_end: datetime,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.report import demo_report

    clear_journal(database)
    monkeypatch.setenv("TRADELOOM_REPORT_REPORT_DIR", str(tmp_path))
    received = demo_report(database, 0)
    assert received.parent == tmp_path and received.name.startswith("received_daily_")
    message = BytesParser(policy=policy.default).parsebytes(received.read_bytes())
    assert message["To"] == "operator@localhost" and str(message["Subject"]).strip().startswith("[tradeloom] ")
    assert received.with_name(received.name.removeprefix("received_")).is_file()

"""The daily email through a real SMTP server (aiosmtpd on 127.0.0.1), built from the real database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from pipelines.drift import DriftSettings, _performance, run_drift
from pipelines.report import ReportSettings, gather, send_report
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


SHADOWED = "shadowed"


def test_the_challengers_shadow_journal_stays_out_of_the_champions_report_and_drift(clean_db: Database) -> None:
    """Champion (paper) and challenger (shadow) journal the same strategy: the email's PnL and orders and the
    drift performance check are the champion's alone (the shadow is compared apart, pipelines/shadow.py)."""
    db = clean_db
    with db.transaction(db.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("truncate decisions, orders, fills, equity_snapshots, drift_runs cascade")
        cur.execute("insert into instruments (exchange, symbol, segment, tick_size, lot_size, currency, timezone,"
                    " session_open, session_close) values ('NSE','X','EQ',0.05,1,'INR','Asia/Kolkata','09:15','15:30')"
                    " returning instrument_id")
        iid = cur.fetchone()[0]  # type: ignore[index]
        y_close, t_close = datetime(2026, 12, 3, 10, 0, tzinfo=UTC), datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
        for mode, (open_eq, close_eq) in {"paper": (100_000, 101_000), "shadow": (100_000, 90_000)}.items():
            for at, eq in ((y_close, open_eq), (t_close, close_eq)):
                cur.execute("insert into equity_snapshots (strategy, mode, snapshot_at, equity, cash, gross_exposure,"
                            " net_exposure) values (%s, %s, %s, %s, %s, 0, 0)", (SHADOWED, mode, at, eq, eq))
        for n in range(3):
            cur.execute("insert into orders (client_order_id, broker, strategy, mode, instrument_key, side, quantity,"
                        " order_type, product, purpose, state, created_at) values (%s,'paper',%s,'shadow','NSE:X',1,1,"
                        "'market','CNC','entry','filled',%s)", (f"sh-{n}", SHADOWED, t_close))
        # 30 daily bars; champion always right, challenger always wrong
        for k in range(31):
            cur.execute("insert into bars_1d (instrument_id, bar_at, open, high, low, close, volume, source) values "
                        "(%s, %s, 100, 200, 50, %s, 1, 't')",
                        (iid, datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=k), 100 + (k % 2) * 10))
        for k in range(30):
            up = 1 if k % 2 == 0 else -1
            for mode, sig in (("paper", up), ("shadow", -up)):
                rec = {"instruments": {"NSE:X": {"signal": sig, "confidence": 1.0}}}
                cur.execute("insert into decisions (strategy, mode, bar_at, record) values (%s,%s,%s,%s)",
                            (SHADOWED, mode, datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=k),
                             json.dumps(rec)))
    summary = gather(db, date(2026, 12, 4), ReportSettings(strategy=SHADOWED, mlflow_url="http://127.0.0.1:1"))
    assert summary.pnl == 1000.0 and summary.orders_by_state == {}
    performance = _performance(db, SHADOWED, "bars_1d", datetime(2026, 10, 1, tzinfo=UTC),
                               datetime(2026, 12, 5, tzinfo=UTC), 252)
    assert performance.evaluated == 30 and performance.accuracy == 1.0

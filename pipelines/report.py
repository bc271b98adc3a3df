"""The daily email: PnL, orders, drift verdicts, champion version and data-quality verdicts of one day,
with the Evidently drift report attached and links to the Airflow, MLflow and report pages.

`prepare_report` builds the message and writes it as an .eml under `.loom/reports/` (idempotent per day);
outside Airflow `send_message` sends it with SMTP settings from the environment (TRADELOOM_REPORT_*); in
Airflow the `daily_report` DAG sends the same .eml through its SMTP connection.
"""

from __future__ import annotations

import html
import json
import logging
import smtplib
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tradeloom.adapters.db import Database
from tradeloom.errors import ConfigError

log = logging.getLogger(__name__)
STATUS_COLOURS = {"green": "#1a7f37", "amber": "#b58900", "red": "#cf222e", "skipped": "#6e7781",
                  "passed": "#1a7f37", "failed": "#cf222e"}


class ReportSettings(BaseSettings):
    """Who gets the report and how it travels (env prefix TRADELOOM_REPORT_)."""

    model_config = SettingsConfigDict(env_prefix="TRADELOOM_REPORT_", env_file=".env", extra="ignore")

    strategy: str = "direction_daily"
    registered_model: str = "tradeloom-direction_daily"
    recipients: list[str] = Field(default_factory=lambda: ["operator@localhost"])
    sender: str = "tradeloom@localhost"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = 30.0
    airflow_url: str = "http://127.0.0.1:8080"
    mlflow_url: str = "http://127.0.0.1:5000"
    report_dir: Path | None = None  # default: <home>/reports


@dataclass
class DailySummary:
    day: date
    strategy: str
    pnl: float | None = None
    equity: float | None = None
    realized_pnl: float | None = None
    orders_by_state: dict[str, int] = field(default_factory=dict)
    fills: int = 0
    drift: dict[str, Any] | None = None
    champion_version: str | None = None
    data_quality: list[dict[str, Any]] = field(default_factory=list)

    @property
    def orders(self) -> int:
        return sum(self.orders_by_state.values())


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, UTC)
    return start, start + timedelta(days=1)


def _champion(settings: ReportSettings, db: Database) -> str | None:
    from pipelines.mlflow_server import registry_target
    from tradeloom.adapters.registry import CHAMPION, alias_version

    try:
        return alias_version(registry_target(db.settings), settings.registered_model, CHAMPION)
    except Exception as error:  # the email must go out even when MLflow is down
        log.warning("champion version unavailable: %s", error)
        return None


def gather(db: Database, day: date, settings: ReportSettings | None = None) -> DailySummary:
    """Everything the email shows, read from the journal, drift_runs, validation_runs and the registry."""
    from pipelines.drift import latest_drift

    settings = settings or ReportSettings()
    start, end = _day_bounds(day)
    summary = DailySummary(day=day, strategy=settings.strategy)
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select equity, realized_pnl from equity_snapshots where strategy = %s and mode <> 'shadow'"
                    " and snapshot_at < %s order by snapshot_at desc limit 1", (settings.strategy, end))
        closing = cur.fetchone()
        cur.execute("select equity from equity_snapshots where strategy = %s and mode <> 'shadow' and snapshot_at < %s"
                    " order by snapshot_at desc limit 1", (settings.strategy, start))
        opening = cur.fetchone()
        cur.execute("select state, count(*) from orders where strategy = %s and mode <> 'shadow' and created_at >= %s"
                    " and created_at < %s group by state order by state", (settings.strategy, start, end))
        summary.orders_by_state = {str(state): int(count) for state, count in cur.fetchall()}
        cur.execute("select count(*) from fills f join orders o using (client_order_id) where o.strategy = %s"
                    " and o.mode <> 'shadow' and f.filled_at >= %s and f.filled_at < %s",
                    (settings.strategy, start, end))
        row = cur.fetchone()
        summary.fills = int(row[0]) if row else 0
        cur.execute(
            "select target_table, status, count(*), sum(rows_checked), sum(rows_failed) from validation_runs "
            "where (started_at >= %s and started_at < %s) or (range_start_at < %s and range_end_at > %s) "
            "group by target_table, status order by target_table, status", (start, end, end, start))
        summary.data_quality = [{"table": t, "status": s, "runs": int(n), "rows_checked": int(c or 0),
                                 "rows_failed": int(f or 0)} for t, s, n, c, f in cur.fetchall()]
    if closing is not None:
        summary.equity, summary.realized_pnl = float(closing[0]), float(closing[1])
        summary.pnl = float(closing[0]) - float(opening[0]) if opening is not None else None
    summary.drift = latest_drift(db, strategy=settings.strategy, before=end)
    summary.champion_version = _champion(settings, db)
    return summary


def _badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#24292f")
    return f'<b style="color:{colour}">{html.escape(status.upper())}</b>'


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def render_html(summary: DailySummary, links: dict[str, str]) -> str:
    """A short, inline-styled HTML body (mail clients drop stylesheets)."""
    rows = "".join(f"<tr><td>{html.escape(state)}</td><td>{count}</td></tr>"
                   for state, count in summary.orders_by_state.items()) or "<tr><td colspan=2>no orders</td></tr>"
    drift = summary.drift
    if drift is None:
        drift_html = "<p>No drift run on record.</p>"
    else:
        items = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{_badge(str(v.get('status')))}</td>"
            f"<td>{html.escape(str(v.get('detail', '')))}</td></tr>" for name, v in (drift["verdicts"] or {}).items())
        drift_html = (f"<p>Overall {_badge(drift['status'])} (window ending {html.escape(drift['window_end'])})</p>"
                      f"<table border=1 cellpadding=4>{items}</table>")
    quality = "".join(
        f"<tr><td>{html.escape(q['table'])}</td><td>{_badge(q['status'])}</td><td>{q['runs']}</td>"
        f"<td>{q['rows_checked']}</td><td>{q['rows_failed']}</td></tr>" for q in summary.data_quality
    ) or "<tr><td colspan=5>no validation runs</td></tr>"
    link_items = "".join(f'<li><a href="{html.escape(url, quote=True)}">{html.escape(name)}</a></li>'
                         for name, url in links.items())
    return (
        "<html><body style=\"font-family:sans-serif\">"
        f"<h2>tradeloom daily report: {summary.strategy}, {summary.day.isoformat()}</h2>"
        f"<p>PnL today: <b>{_money(summary.pnl)}</b>; equity {_money(summary.equity)}; "
        f"realised PnL {_money(summary.realized_pnl)}</p>"
        f"<h3>Orders ({summary.orders}) and fills ({summary.fills})</h3>"
        f"<table border=1 cellpadding=4><tr><th>state</th><th>orders</th></tr>{rows}</table>"
        f"<h3>Drift</h3>{drift_html}"
        f"<h3>Model</h3><p>@champion: version {html.escape(summary.champion_version or 'none')}</p>"
        "<h3>Data quality</h3><table border=1 cellpadding=4><tr><th>table</th><th>status</th><th>runs</th>"
        f"<th>rows checked</th><th>rows failed</th></tr>{quality}</table>"
        f"<h3>Links</h3><ul>{link_items}</ul></body></html>"
    )


def build_message(summary: DailySummary, settings: ReportSettings, attachments: list[Path]) -> EmailMessage:
    if not settings.recipients:
        raise ConfigError("TRADELOOM_REPORT_RECIPIENTS is empty; expected at least one address")
    links = {"Airflow": f"{settings.airflow_url.rstrip('/')}/dags/daily_report",
             "MLflow": f"{settings.mlflow_url.rstrip('/')}/#/models/{settings.registered_model}"}
    for path in attachments:
        links[f"report file {path.name}"] = path.resolve().as_uri()
    status = summary.drift["status"] if summary.drift else "no drift run"
    message = EmailMessage()
    message["Subject"] = (f"[tradeloom] {summary.strategy} {summary.day.isoformat()}: PnL {_money(summary.pnl)}, "
                          f"{summary.orders} orders, drift {status}")
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="tradeloom.local")
    text = (f"tradeloom daily report {summary.day.isoformat()}: PnL {_money(summary.pnl)}, {summary.orders} orders, "
            f"{summary.fills} fills, drift {status}, champion {summary.champion_version or 'none'}")
    message.set_content(text)
    message.add_alternative(render_html(summary, links), subtype="html")
    for path in attachments:
        message.add_attachment(path.read_bytes(), maintype="text", subtype="html", filename=path.name)
    return message


def write_eml(message: EmailMessage, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(message.as_bytes(policy=policy.SMTP))
    return path


def read_eml(path: Path) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    if not isinstance(parsed, EmailMessage):
        raise ConfigError(f"{path} is not an email message")
    return parsed


def prepare_report(db: Database, day: date, settings: ReportSettings | None = None,
                   report_dir: Path | None = None) -> dict[str, Any]:
    """Build the day's message, write it as .eml and record it (not yet sent); builtins for Airflow."""
    settings = settings or ReportSettings()
    summary = gather(db, day, settings)
    report_path = (summary.drift or {}).get("report_path")
    attachments = [Path(report_path)] if report_path and Path(report_path).is_file() else []
    message = build_message(summary, settings, attachments)
    report_dir = report_dir or settings.report_dir or db.settings.home / "reports"
    eml = write_eml(message, report_dir / f"daily_{summary.strategy}_{day.isoformat()}.eml")
    # The HTML body alone, for senders that build their own MIME (Airflow's SmtpHook).
    body = message.get_body(preferencelist=("html",))
    html_path = eml.with_suffix(".html")
    html_path.write_text(body.get_content() if body is not None else "", encoding="utf-8")
    record = {"pnl": summary.pnl, "orders": summary.orders_by_state, "fills": summary.fills,
              "drift_status": summary.drift["status"] if summary.drift else None,
              "champion_version": summary.champion_version, "data_quality": summary.data_quality}
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(
            "insert into daily_reports (report_date, strategy, subject, recipients, message_path, attachments, "
            "sent, summary) values (%s, %s, %s, %s, %s, %s, false, %s) on conflict (report_date, strategy) do "
            "update set subject = excluded.subject, recipients = excluded.recipients, message_path = "
            "excluded.message_path, attachments = excluded.attachments, sent = false, summary = excluded.summary, "
            "updated_at = now()",
            (day, summary.strategy, str(message["Subject"]), settings.recipients, str(eml),
             [str(p) for p in attachments], json.dumps(record, default=str)))
    return {"eml_path": str(eml), "html_path": str(html_path), "subject": str(message["Subject"]),
            "sender": settings.sender,
            "recipients": list(settings.recipients), "attachments": [str(p) for p in attachments],
            "strategy": summary.strategy, "day": day.isoformat(), "summary": json.loads(json.dumps(
                {**asdict(summary), "day": day.isoformat()}, default=str))}


def mark_sent(db: Database, day: date, strategy: str) -> None:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("update daily_reports set sent = true, updated_at = now() where report_date = %s and "
                    "strategy = %s", (day, strategy))


def send_message(message: EmailMessage, settings: ReportSettings) -> None:
    """SMTP from the environment's settings (outside Airflow)."""
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds) as client:
        if settings.smtp_starttls:
            client.starttls()
        if settings.smtp_user and settings.smtp_password is not None:
            client.login(settings.smtp_user, settings.smtp_password.get_secret_value())
        client.send_message(message, from_addr=settings.sender, to_addrs=settings.recipients)


def send_report(db: Database, day: date, settings: ReportSettings | None = None,
                report_dir: Path | None = None) -> dict[str, Any]:
    settings = settings or ReportSettings()
    prepared = prepare_report(db, day, settings, report_dir)
    send_message(read_eml(Path(prepared["eml_path"])), settings)
    mark_sent(db, day, prepared["strategy"])
    return prepared


def demo_report(db: Database, smtp_port: int = 0) -> Path:
    """The demo hook: send today's report to a local aiosmtpd server on 127.0.0.1:`smtp_port` (0 = any free
    port) and save the message exactly as the server received it; returns that .eml."""
    from pipelines.smtp_capture import captured_smtp

    day = datetime.now(UTC).date()
    with captured_smtp(smtp_port) as capture:
        settings = ReportSettings(smtp_host="127.0.0.1", smtp_port=capture.port)
        prepared = send_report(db, day, settings)
        received = capture.wait_for(1)
    out = Path(prepared["eml_path"]).with_name(f"received_{Path(prepared['eml_path']).name}")
    out.write_bytes(received[0].content)
    return out

"""daily_report: the operator's e-mail (PnL, orders, drift verdicts, champion version, data quality,
links), Evidently report attached, sent through the Airflow SMTP connection `smtp_default`."""

from __future__ import annotations

from airflow.sdk import dag, task
from tradeloom_dag_support import ML_VENV, SMTP_CONN_ID, START_DATE, TAGS, default_args


@dag(dag_id="daily_report", schedule="30 19 * * 1-5", start_date=START_DATE, catchup=False, max_active_runs=1,
     tags=[*TAGS, "monitoring"], default_args=default_args(), doc_md=__doc__)
def daily_report() -> None:
    @task.external_python(**ML_VENV)
    def prepare(day: str) -> dict[str, object]:
        from pipelines.jobs import prepare_daily_report

        return prepare_daily_report(day)

    @task
    def send(prepared: dict[str, object]) -> dict[str, object]:
        """The pipeline's subject, HTML body and attachments, sent through the connection."""
        from pathlib import Path

        from airflow.providers.smtp.hooks.smtp import SmtpHook

        with SmtpHook(smtp_conn_id=SMTP_CONN_ID) as hook:
            hook.send_email_smtp(to=prepared["recipients"], from_email=prepared["sender"],
                                 subject=prepared["subject"], files=prepared["attachments"],
                                 html_content=Path(prepared["html_path"]).read_text(encoding="utf-8"))
        return {"day": prepared["day"], "strategy": prepared["strategy"], "recipients": prepared["recipients"]}

    @task.external_python(**ML_VENV)
    def mark_sent(sent: dict[str, object]) -> dict[str, object]:
        from pipelines.jobs import mark_daily_report_sent

        return mark_daily_report_sent(sent["day"], sent["strategy"])

    mark_sent(send(prepare("{{ ds }}")))


daily_report()

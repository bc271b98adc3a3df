"""premarket: before the NSE session, check the broker session by calling the broker and refresh the
instrument master from it (live venv: the SDKs live there), then check the database, MLflow and the
`@champion` model; write the health flag the executor reads before it starts; e-mail the operator on red.
Skips exchange holidays and weekends (exchange_calendars, XBOM = the NSE equity holiday list)."""

from __future__ import annotations

from airflow.sdk import dag, task
from tradeloom_dag_support import ALERT_TO, LIVE_VENV, ML_VENV, SMTP_CONN_ID, START_DATE, TAGS, default_args


@dag(dag_id="premarket", schedule="30 8 * * 1-5", start_date=START_DATE, catchup=False, max_active_runs=1,
     tags=[*TAGS, "operations"], default_args=default_args(), doc_md=__doc__,
     params={"calendar": "XBOM"})
def premarket() -> None:
    @task.external_python(**ML_VENV)
    def session_check(day: str, calendar: str) -> dict[str, object]:
        from pipelines.jobs import session_day

        return session_day(day, calendar)

    @task.short_circuit
    def is_trading_day(session: dict[str, object]) -> bool:
        return bool(session["is_session"])

    @task.external_python(**LIVE_VENV)
    def broker_checks(day: str) -> dict[str, object]:
        from pipelines.jobs import premarket_broker

        return premarket_broker(day)

    @task.external_python(**ML_VENV)
    def health_checks(day: str, broker: dict[str, object]) -> dict[str, object]:
        from pipelines.jobs import premarket

        return premarket(day, broker)

    @task(templates_dict={"to": ALERT_TO})
    def alert_if_red(result: dict[str, object], templates_dict: dict[str, object] | None = None) -> str:
        """A red result is a finding, not a task failure: e-mail it and let the run succeed."""
        if result["status"] == "green":
            return "green"
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        failed = {name: check["detail"] for name, check in result["checks"].items() if not check["ok"]}
        items = "".join(f"<li><b>{name}</b>: {detail}</li>" for name, detail in failed.items())
        with SmtpHook(smtp_conn_id=SMTP_CONN_ID) as hook:
            hook.send_email_smtp(
                to=(templates_dict or {})["to"],
                subject=f"[tradeloom] premarket RED for {result['session_date']}: executor blocked",
                html_content=f"<p>The executor will not start: health flag {result['health_file']}</p>"
                             f"<ul>{items}</ul>",
            )
        return "red"

    session = session_check("{{ ds }}", "{{ params.calendar }}")
    broker = broker_checks("{{ ds }}")
    checks = health_checks("{{ ds }}", broker)
    is_trading_day(session) >> broker
    alert_if_red(checks)


premarket()

"""`market_data_ingest` end to end with `airflow dags test` and source=kite: the fetch task runs in the
live venv against the fake Kite server (real SDK), ingest and the data gate in the ML venv. (Re-runs adding
nothing is proven in test_broker_history_ingest.py, without Airflow's start-up cost.)"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.broker_connection import BrokerSettings
from pipelines.instrument_master import refresh_instrument_master
from tests.integration.airflow_support import harness
from tradeloom.adapters.brokers.fakes.kite_server import FakeKiteServer
from tradeloom.adapters.brokers.kite.config import KiteConfig
from tradeloom.adapters.brokers.kite.execution import KiteBroker
from tradeloom.adapters.db import Database

LOGICAL = "2024-03-05T04:30:00+00:00"  # 10:00 IST: the 15-minute runs' window ends here
WINDOW_MINUTES = 45  # 09:15-10:00 IST


def test_market_data_ingest_kite_source_fetches_ingests_validates(
    clean_db: Database, kite_server: FakeKiteServer, kite_config: KiteConfig, tmp_path: Path
) -> None:
    refresh_instrument_master(clean_db, KiteBroker(kite_config), BrokerSettings(name="kite", kite=kite_config))
    assert kite_config.access_token is not None
    metadata_db = f"airflow_kite_{os.getpid()}"
    airflow = harness(clean_db.cluster, metadata_db, tmp_path / "airflow-home", {
        "TRADELOOM_DATABASE_NAME": clean_db.settings.database_name,
        "TRADELOOM_HOME": str(clean_db.settings.home),
        "TRADELOOM_BROKER_KITE__API_KEY": kite_config.api_key,
        "TRADELOOM_BROKER_KITE__API_SECRET": kite_config.api_secret.get_secret_value(),
        "TRADELOOM_BROKER_KITE__ACCESS_TOKEN": kite_config.access_token.get_secret_value(),
        "TRADELOOM_BROKER_KITE__ROOT": kite_config.root,
    })
    try:
        airflow.migrate()
        conf = {"source": "kite", "window_minutes": WINDOW_MINUTES}
        run = airflow.finish("market_data_ingest", airflow.start_dags_test("market_data_ingest", LOGICAL, conf))
    finally:
        clean_db.cluster.psql(f"drop database if exists {metadata_db} with (force)")
    expected = len(kite_server.listings) * WINDOW_MINUTES
    assert run.returncode == 0, run.output[-6000:]
    assert run.states == {"plan_window": "success", "fetch": "success", "ingest": "success",
                          "validate": "success"}, run.output[-6000:]
    assert run.xcoms["fetch"]["rows"] == expected and run.xcoms["fetch"]["source"] == "kite:history"
    assert (run.xcoms["ingest"]["inserted"], run.xcoms["ingest"]["quarantined"]) == (expected, 0)
    assert run.xcoms["validate"]["status"] == "passed" and run.xcoms["validate"]["rows_checked"] == expected
    assert ("GET", "/instruments") not in kite_server.requests  # tokens came from our master, not a download
    with clean_db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select count(*), min(bar_at), max(bar_at) from bars_1m where source = %s", ("kite:history",))
        counts = cur.fetchone()
    assert counts is not None and counts[0] == expected
    assert counts[1].isoformat() == "2024-03-05T03:45:00+00:00" and counts[2].isoformat() == "2024-03-05T04:29:00+00:00"

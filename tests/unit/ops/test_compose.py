"""docker/compose.yaml validated statically (no Docker engine here): structure, healthchecks, volumes,
secrets from files, and no secret literal anywhere."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[3] / "docker"
SECRET_WORDS = re.compile(r"(password|secret|token|api_key|jwt)", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in _walk(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [item for index, value in enumerate(node) for item in _walk(value, f"{path}[{index}]")]
    return [(path, node)]


def test_compose_services_cover_the_stack(compose: dict[str, Any]) -> None:
    expected = {"timescaledb", "redis", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer", "airflow-worker", "mlflow", "executor"}
    assert expected <= set(compose["services"])
    assert compose["services"]["timescaledb"]["image"].startswith("timescale/timescaledb:")


def test_compose_every_service_has_image_or_build_env_and_volumes(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert "image" in service or "build" in service, name
        assert service.get("environment"), f"{name}: no environment"
        assert service.get("volumes"), f"{name}: no volumes"
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name}: named volume {source} undeclared"


def test_compose_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if service.get("restart", "no") != "no":
            assert "healthcheck" in service, name
            assert service["healthcheck"]["test"], name


def test_compose_executor_defaults_local_and_celery_behind_a_profile(compose: dict[str, Any]) -> None:
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW_EXECUTOR:-LocalExecutor}"
    assert compose["services"]["redis"]["profiles"] == ["celery"]
    assert compose["services"]["airflow-worker"]["profiles"] == ["celery"]


def test_compose_secrets_come_from_files_and_no_literal_is_written(compose: dict[str, Any]) -> None:
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/"), name
    for name, service in compose["services"].items():
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], f"{name}: secret {secret} undeclared"
    for path, value in _walk(compose["services"]):
        key = path.rsplit(".", 1)[-1]
        if ".environment." in path and SECRET_WORDS.search(key) and isinstance(value, str):
            # A secret-named setting may only point at a file or a command reading one.
            assert value.startswith("/run/secrets/") or "/run/secrets/" in value, f"{path}={value!r}"
        if isinstance(value, str):
            assert not re.search(r"://[^:/@\s]+:[^@$\s]+@", value.replace("%s@", "")), f"credential in URL: {path}"


def test_compose_dockerfiles_install_from_the_lock_files() -> None:
    for name, lock in (("ml", "ml.txt"), ("live", "live.txt"), ("airflow", "airflow.txt")):
        text = (DOCKER / f"{name}.Dockerfile").read_text(encoding="utf-8")
        assert f"locks/{lock}" in text, name
        assert "USER " in text, f"{name}: runs as root"

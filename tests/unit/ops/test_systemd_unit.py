"""docker/tradeloom-executor.service: systemd-analyze verify when available, and its required settings."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

UNIT = Path(__file__).resolve().parents[3] / "docker" / "tradeloom-executor.service"


def _service() -> dict[str, list[str]]:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    values: dict[str, list[str]] = {}
    # Repeated keys (LoadCredential=, Environment=) are legal in units: collect them all.
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    assert parser.sections() == ["Unit", "Service", "Install"]
    return values


def test_systemd_unit_notify_watchdog_restart_and_credentials() -> None:
    values = _service()
    assert values["Type"] == ["notify"]
    assert int(values["WatchdogSec"][0]) > 0
    assert values["Restart"] == ["always"]
    assert len(values["LoadCredential"]) >= 1
    assert all(":" in item for item in values["LoadCredential"])
    assert values["User"] and values["User"][0] != "root"


def test_systemd_unit_hardening_options_present() -> None:
    values = _service()
    for key, expected in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                          ("PrivateTmp", "yes"), ("RestrictSUIDSGID", "yes")):
        assert values[key] == [expected], key
    assert values["ReadWritePaths"] == ["/var/lib/tradeloom"]


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        _service()  # parsed above; nothing more to check without systemd
        return
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text(encoding="utf-8"), encoding="utf-8")
    done = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, check=False,
                          timeout=60)
    # The unit names a user, paths and a venv that exist only on a deployed host: those are the only
    # complaints allowed; any syntax error or unknown setting fails.
    allowed = ("Failed to resolve user", "No such file", "is not executable", "not found", "postgresql.service")
    problems = [line for line in done.stderr.splitlines() if line.strip() and not any(a in line for a in allowed)]
    assert problems == [], done.stderr

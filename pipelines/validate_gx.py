"""Great Expectations 1.x plumbing for the data gate: the file context (config and suites in
`expectations/`, generated output under `.loom/gx/`), one checkpoint per raw table, and the results
reduced to what the gate needs (which expectation failed on which rows)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import numpy.typing as npt
import pandas as pd

from tradeloom.errors import ConfigError
from tradeloom.settings import project_root

log = logging.getLogger(__name__)

DATASOURCE = "tradeloom_raw"
# Expectations whose failure means the data is missing, not wrong: there is no row to quarantine.
NOT_QUARANTINED = frozenset({"holes", "stale_data"})


@dataclass(frozen=True)
class ExpectationOutcome:
    check: str
    expectation: str  # GX type, e.g. expect_column_pair_values_a_to_be_greater_than_b
    columns: tuple[str, ...]
    success: bool
    element_count: int
    unexpected_count: int
    failing_rows: npt.NDArray[np.int64]  # row_number values of the validated frame

    @property
    def label(self) -> str:
        return f"{self.check}: {self.expectation}({', '.join(self.columns)})"


@dataclass(frozen=True)
class SuiteOutcome:
    success: bool
    expectations: tuple[ExpectationOutcome, ...]
    data_docs_path: Path | None


def expectations_dir() -> Path:
    return project_root(Path(__file__).resolve().parent) / "expectations"


@lru_cache(maxsize=4)
def gx_context(gx_root: Path) -> Any:
    """The file context rooted at `gx_root` (generated output) with the committed config and suites."""
    # Both are read when GX is imported; nothing may call out to the network.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    import great_expectations as gx
    from great_expectations.data_context.types.base import DataContextConfig
    from ruamel.yaml import YAML

    config_path = expectations_dir() / "great_expectations.yml"
    if not config_path.is_file():
        raise ConfigError(f"Great Expectations config not found at {config_path}")
    config = YAML(typ="safe").load(config_path.read_text(encoding="utf-8"))
    gx_root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(project_config=DataContextConfig(**config), context_root_dir=str(gx_root))
    for path in sorted((expectations_dir() / "suites").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        suite = gx.ExpectationSuite(**data)
        # GX only logs an expectation it cannot parse; a gate silently missing a check must not start.
        if len(suite.expectations) != len(data.get("expectations", [])):
            raise ConfigError(f"{path}: {len(data['expectations']) - len(suite.expectations)} expectation(s) "
                              "could not be parsed by Great Expectations (see the log)")
        context.suites.add_or_update(suite)
    return context


def _columns(kwargs: dict[str, Any]) -> tuple[str, ...]:
    if "column_list" in kwargs:
        return tuple(str(column) for column in kwargs["column_list"])
    if "column_A" in kwargs:
        return (str(kwargs["column_A"]), str(kwargs["column_B"]))
    return (str(kwargs["column"]),) if "column" in kwargs else ()


def run_suite(gx_root: Path, table: str, frame: pd.DataFrame, time_column: str) -> SuiteOutcome:
    """Validate `frame` against the suite named `table` through a checkpoint that updates Data Docs."""
    context = gx_context(gx_root)
    suite = context.suites.get(table)
    checked = {column for e in suite.expectations for column in _columns(e.configuration.kwargs)}
    missing = checked - set(map(str, frame.columns))
    if missing:
        raise ConfigError(f"suite {table!r} checks column(s) {sorted(missing)} that the validated frame lacks")
    checkpoint = _checkpoint(gx_root, table, time_column)
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    (identifier, suite_result), *_ = result.run_results.items()
    outcomes = []
    for item in suite_result.results:
        config = item.expectation_config
        details = item.result or {}
        index = details.get("unexpected_index_list") or []
        rows = np.unique(np.asarray([int(entry["row_number"]) for entry in index], dtype=np.int64))
        outcomes.append(ExpectationOutcome(
            check=str((config.meta or {}).get("check", config.type)), expectation=str(config.type),
            columns=_columns(config.kwargs), success=bool(item.success),
            element_count=int(details.get("element_count") or 0),
            unexpected_count=int(details.get("unexpected_count") or 0), failing_rows=rows,
        ))
    return SuiteOutcome(bool(suite_result.success), tuple(outcomes), _docs_path(context, identifier))


@lru_cache(maxsize=16)
def _checkpoint(gx_root: Path, table: str, time_column: str) -> Any:
    """The table's checkpoint (pandas frame → suite → Data Docs), stored once per process: saving it
    costs about a second."""
    import great_expectations as gx
    from great_expectations.checkpoint.actions import UpdateDataDocsAction

    context = gx_context(gx_root)
    suite = context.suites.get(table)
    # One pandas datasource per table: replacing a shared one would drop the other tables' assets.
    name = f"{DATASOURCE}_{table}"
    # Re-created each process: a datasource read back from the generated config has no live context.
    source = context.data_sources.add_or_update_pandas(name)
    batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("frame")
    definition = context.validation_definitions.add_or_update(gx.ValidationDefinition(name=table, data=batch,
                                                                                      suite=suite))
    return context.checkpoints.add_or_update(gx.Checkpoint(
        name=f"gate_{table}", validation_definitions=[definition],
        actions=[UpdateDataDocsAction(name="update_data_docs")],
        result_format={"result_format": "COMPLETE", "partial_unexpected_count": 5,
                       "unexpected_index_column_names": ["row_number", "instrument_id", time_column]},
    ))


def _docs_path(context: Any, identifier: Any) -> Path | None:
    """The Data Docs page of this validation result (the site index when GX cannot say)."""
    try:
        sites = context.get_docs_sites_urls(resource_identifier=identifier)
    except Exception:  # a missing page must not hide the validation result
        log.warning("could not locate the Data Docs page of %s", identifier, exc_info=True)
        sites = context.get_docs_sites_urls()
    for site in sites:
        url = site.get("site_url")
        if url and url.startswith("file://"):
            return Path(unquote(urlsplit(url).path))
    return None


def docs_index(gx_root: Path) -> Path:
    return gx_root / "data_docs" / "local_site" / "index.html"

"""Index names and index templates with explicit mappings (dynamic fields refused)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stats.sufficient import STATISTICS

KEYWORD = {"type": "keyword"}
DOUBLE = {"type": "double"}
DATE = {"type": "date", "format": "strict_date_optional_time||epoch_second"}
SETTINGS = {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"}

RESULT_FIELDS = {
    "experiment": KEYWORD,
    "metric": KEYWORD,
    "variant": KEYWORD,
    "control": KEYWORD,
    "comparison": KEYWORD,  # experiment/metric/variant, one series per chart line
    "looked_at": DATE,
    "n_control": DOUBLE,
    "n_variant": DOUBLE,
    "mean_control": DOUBLE,
    "mean_variant": DOUBLE,
    "abs_effect": DOUBLE,
    "abs_ci_low": DOUBLE,
    "abs_ci_high": DOUBLE,
    "rel_effect": DOUBLE,
    "rel_ci_low": DOUBLE,
    "rel_ci_high": DOUBLE,
    "abs_p_value": DOUBLE,
    "p_value": DOUBLE,
    "adjusted_p_value": DOUBLE,
    "significant": {"type": "boolean"},
    "cuped": {"type": "boolean"},
    "variance_reduction": DOUBLE,
    "sequential_p_value": DOUBLE,
    "sequential_rel_ci_low": DOUBLE,
    "sequential_rel_ci_high": DOUBLE,
    "chance_to_win": DOUBLE,
    "expected_loss": DOUBLE,
    "notes": KEYWORD,
}


def names(prefix: str) -> dict[str, str]:
    """Index name or pattern of each kind of document."""
    return {
        "windows": f"{prefix}-windows-*",
        "results": f"{prefix}-results",
        "history": f"{prefix}-results-history-*",
        "alerts": f"{prefix}-alerts",
    }


def monthly(prefix: str, kind: str, epoch_seconds: float) -> str:
    return f"{prefix}-{kind}-{datetime.fromtimestamp(epoch_seconds, UTC):%Y.%m}"


def templates(prefix: str) -> dict[str, dict[str, Any]]:
    """Template name → body, for ``indices.put_index_template``."""
    index = names(prefix)
    window_fields = {
        "experiment": KEYWORD,
        "variant": KEYWORD,
        "metric": KEYWORD,
        "window_start": DATE,
        "mean": DOUBLE,
        "variance": DOUBLE,
        **dict.fromkeys(STATISTICS, DOUBLE),
    }
    alert_fields = {
        "alert_id": KEYWORD,
        "kind": KEYWORD,
        "experiment": KEYWORD,
        "flag": KEYWORD,
        "metric": KEYWORD,
        "variant": KEYWORD,
        "rel_effect": DOUBLE,
        "rel_ci_low": DOUBLE,
        "rel_ci_high": DOUBLE,
        "margin": DOUBLE,
        "sequential_p_value": DOUBLE,
        "n_control": DOUBLE,
        "n_variant": DOUBLE,
        "action_taken": KEYWORD,
        "created_at": DATE,
        "srm_p_value": DOUBLE,
    }

    def body(pattern: str, fields: dict[str, Any]) -> dict[str, Any]:
        return {
            "index_patterns": [pattern],
            "template": {
                "settings": SETTINGS,
                "mappings": {"dynamic": False, "properties": fields},
            },
        }

    return {
        f"{prefix}-windows": body(index["windows"], window_fields),
        f"{prefix}-results": body(index["results"], RESULT_FIELDS),
        f"{prefix}-results-history": body(index["history"], RESULT_FIELDS),
        f"{prefix}-alerts": body(index["alerts"], alert_fields),
    }

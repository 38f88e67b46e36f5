"""The nine sufficient statistics are defined once (``ArmStats``, hence ``STATISTICS``); every
place that has to spell them out again is held to that definition, names and order."""

from __future__ import annotations

from dataclasses import fields

import pipelines.attribution as attribution
from config.catalog import parse_catalog
from jobs.analyze import ArmInput
from pipelines.events import Exposure, MetricEvent
from sinks.sql.models import WindowAggregateRow
from stats.sufficient import STATISTICS, ArmStats

CATALOG = parse_catalog(
    {
        "metrics": [
            {"key": "spend", "kind": "sum"},
            {"key": "orders", "kind": "count"},
            {"key": "aov", "kind": "ratio", "numerator": "spend", "denominator": "orders"},
        ],
        "experiments": [
            {
                "key": "e",
                "control": "control",
                "variants": [{"key": "control", "weight": 0.5}, {"key": "t", "weight": 0.5}],
                "metrics": ["spend", "aov"],
            }
        ],
    }
)


def test_the_names_and_their_order() -> None:
    assert tuple(f.name for f in fields(ArmStats)) == STATISTICS
    assert len(STATISTICS) == len(set(STATISTICS)) == 9


def test_sql_columns_follow_the_definition() -> None:
    columns = [c.name for c in WindowAggregateRow.__table__.columns]
    assert [c for c in columns if c in STATISTICS] == list(STATISTICS)


def test_the_analysis_input_follows_the_definition() -> None:
    assert tuple(ArmInput.model_fields) == STATISTICS


def test_attribution_positions_follow_the_definition() -> None:
    for position, name in enumerate(STATISTICS):
        assert getattr(attribution, name.upper()) == position, name
    assert len(STATISTICS) == attribution.ROW_LENGTH


def test_a_booked_row_names_each_statistic_rightly() -> None:
    """A wrong position books a sum under another name: the row, read by name, must equal the
    statistics of the user-level values computed by hand."""
    aggregates = attribution.Aggregates()
    config = attribution.AttributionConfig.of(CATALOG, 10**9, 100.0)
    user = attribution.UserAttribution(config, aggregates)
    user.apply(
        None,
        [
            MetricEvent("m0", 950.0, "u", "spend", 3.0),  # pre-period: x = 3
            Exposure("x", 1000.0, "u", "e", "t"),
            MetricEvent("m1", 1001.0, "u", "spend", 5.0),
            MetricEvent("m2", 1002.0, "u", "orders", 1.0),
            MetricEvent("m3", 1003.0, "u", "orders", 1.0),
        ],
    )
    spend = dict(zip(STATISTICS, aggregates.windows[("e", "t", "spend", 0)], strict=True))
    expected = ArmStats.from_values(y=[5.0], x=[3.0])
    assert spend == {name: float(getattr(expected, name)[0]) for name in STATISTICS}
    aov = dict(zip(STATISTICS, aggregates.windows[("e", "t", "aov", 0)], strict=True))
    expected = ArmStats.from_values(y=[5.0], den=[2.0])
    assert aov == {name: float(getattr(expected, name)[0]) for name in STATISTICS}

"""Experiments analysed from what SQL holds: their cumulative statistics, each always-valid
p-value continued from the last look (the read side of the analyzer, reports and the demo)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from config.catalog import Catalog, Experiment
from sinks.sql.results import running_min_p_values
from sinks.sql.store import cumulative_arms
from stats.analysis import AnalysisOptions
from stats.experiment_analysis import Analysis, analyse, comparisons_for


def analyse_stored(
    engine: Engine, catalog: Catalog, experiments: Sequence[Experiment], options: AnalysisOptions
) -> Analysis:
    arms = cumulative_arms(engine, [e.key for e in experiments])
    previous = running_min_p_values(engine)
    return analyse(
        [c for e in experiments for c in comparisons_for(catalog, e, arms, previous)], options
    )

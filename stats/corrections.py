"""Multiple-testing corrections within groups (one group = one experiment), vectorised."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from stats.sufficient import FloatArray

Correction = Literal["holm", "bh", "none"]


def adjust_p_values(
    p_values: FloatArray, groups: npt.NDArray[np.int64], method: Correction = "holm"
) -> FloatArray:
    """Holm (step-down FWER) or Benjamini–Hochberg (step-up FDR) adjusted p-values, each group
    corrected on its own; NaN p-values are left out. Reference:
    ``statsmodels.stats.multitest.multipletests`` (Holm 1979; Benjamini & Hochberg 1995)."""
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full_like(p_values, np.nan)
    valid = np.flatnonzero(~np.isnan(p_values))
    if method == "none" or valid.size == 0:
        return p_values.copy()
    _, group_ids = np.unique(groups[valid], return_inverse=True)
    order = np.lexsort((p_values[valid], group_ids))
    sorted_groups = group_ids[order]
    sorted_p = p_values[valid][order]
    sizes = np.bincount(sorted_groups)
    first = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rank = np.arange(sorted_p.size) - first[sorted_groups] + 1  # 1-based rank within group
    m = sizes[sorted_groups]
    # One row per group, padded, so running extrema never cross groups and stay exact.
    table = np.empty((sizes.size, int(sizes.max())))
    if method == "holm":
        table.fill(-np.inf)
        table[sorted_groups, rank - 1] = np.minimum(1.0, (m - rank + 1) * sorted_p)
        table = np.maximum.accumulate(table, axis=1)
    elif method == "bh":
        table.fill(np.inf)
        table[sorted_groups, rank - 1] = np.minimum(1.0, m / rank * sorted_p)
        table = np.minimum.accumulate(table[:, ::-1], axis=1)[:, ::-1]
    else:
        raise ValueError(f"unknown correction {method!r}: use holm, bh or none")
    result = table[sorted_groups, rank - 1]
    adjusted[valid[order]] = result
    return adjusted

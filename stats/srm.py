"""Sample-ratio mismatch: chi-square goodness of fit of arm sizes to the planned split."""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from stats.sufficient import FloatArray

SRM_THRESHOLD = 0.001  # a mismatch at p < 0.001, as GrowthBook and Optimizely flag it


def srm_p_values(observed: FloatArray, expected_share: FloatArray) -> FloatArray:
    """One p-value per row of ``observed`` (experiments × arms, NaN pads absent arms).

    Pearson's chi-square with ``k − 1`` degrees of freedom; equals ``scipy.stats.chisquare``."""
    observed = np.atleast_2d(observed)
    share = np.atleast_2d(expected_share)
    present = ~np.isnan(observed)
    share = np.where(present, share, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = share / share.sum(axis=1, keepdims=True)
        expected = share * np.where(present, observed, 0.0).sum(axis=1, keepdims=True)
        terms = np.where(present, (observed - expected) ** 2 / expected, 0.0)
    statistic = terms.sum(axis=1)
    df = present.sum(axis=1) - 1
    p_value = sps.chi2.sf(statistic, np.maximum(df, 1))
    return np.where((df < 1) | (np.nansum(observed, axis=1) == 0), 1.0, p_value)

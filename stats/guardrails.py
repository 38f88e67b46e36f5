"""The guardrail breach rule (docs/design.md §10), in the style of GrowthBook's safe rollouts."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from stats.sufficient import FloatArray

GuardrailStatus = Literal["ok", "breached", "waiting"]


def guardrail_status(
    seq_ci_low: FloatArray,
    seq_ci_high: FloatArray,
    n_control: FloatArray,
    n_variant: FloatArray,
    margin: FloatArray,
    bad_increase: npt.NDArray[np.bool_],
    min_users: FloatArray,
) -> npt.NDArray[np.str_]:
    """``breached`` when the always-valid interval of the relative effect lies wholly on the bad
    side of the margin (increase: low > margin; decrease: high < −margin) and each arm has
    ``min_users``; ``waiting`` below ``min_users`` or with no interval yet; else ``ok``."""
    enough = (np.minimum(n_control, n_variant) >= min_users) & ~np.isnan(seq_ci_low)
    bad = np.where(bad_increase, seq_ci_low > margin, seq_ci_high < -margin)
    return np.where(~enough, "waiting", np.where(bad, "breached", "ok"))

"""CUPED: variance reduction with a pre-exposure covariate (Deng, Xu, Kohavi, Walker 2013)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stats.sufficient import ArmStats, FloatArray, centred


@dataclass(frozen=True)
class CupedAdjustment:
    theta: FloatArray
    abs_effect: FloatArray  # d − θ(x̄_t − x̄_c)
    var_c: FloatArray  # per-arm adjusted variance of one user's value
    var_t: FloatArray


def _within_arm(arm: ArmStats) -> tuple[FloatArray, FloatArray, FloatArray]:
    s_xx = centred(arm.x_sum_sq, arm.x_sum, arm.x_sum, arm.n)
    s_xy = centred(arm.xy_sum, arm.x_sum, arm.sum, arm.n)
    s_yy = centred(arm.sum_sq, arm.sum, arm.sum, arm.n)
    return s_xx, s_xy, s_yy


def cuped_adjust(control: ArmStats, variant: ArmStats) -> CupedAdjustment:
    """Pooled within-arm slope ``θ = ΣS_xy/ΣS_xx`` (θ = 0 when x does not vary), so the adjusted
    effect equals the treatment coefficient of OLS ``y ~ treatment + x`` (Frisch–Waugh–Lovell)."""
    sxx_c, sxy_c, syy_c = _within_arm(control)
    sxx_t, sxy_t, syy_t = _within_arm(variant)
    pooled_sxx = sxx_c + sxx_t
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = np.where(pooled_sxx > 0, (sxy_c + sxy_t) / pooled_sxx, 0.0)
        d = variant.sum / variant.n - control.sum / control.n
        x_diff = variant.x_sum / variant.n - control.x_sum / control.n
        var_c = (syy_c - 2 * theta * sxy_c + theta**2 * sxx_c) / (control.n - 1)
        var_t = (syy_t - 2 * theta * sxy_t + theta**2 * sxx_t) / (variant.n - 1)
    return CupedAdjustment(
        theta, d - theta * x_diff, np.maximum(var_c, 0.0), np.maximum(var_t, 0.0)
    )

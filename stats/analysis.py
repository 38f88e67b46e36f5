"""One vectorised call that analyses many (experiment, metric, variant) comparisons at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from stats.bayesian import NormalPrior, chance_to_win, expected_loss, posterior
from stats.corrections import Correction, adjust_p_values
from stats.cuped import cuped_adjust
from stats.effects import relative, welch
from stats.sequential import msprt_interval, msprt_p_value
from stats.sufficient import ArmStats, FloatArray, mean_and_variance, ratio_mean_and_variance

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class AnalysisOptions:
    alpha: float = 0.05
    tau: float = 0.05
    correction: Correction = "holm"
    prior: NormalPrior | None = None


@dataclass(frozen=True)
class ComparisonBatch:
    """Each index is one variant compared with its control arm."""

    control: ArmStats
    variant: ArmStats
    is_ratio: BoolArray
    use_cuped: BoolArray
    group: npt.NDArray[np.int64]  # the experiment, for multiple-testing corrections
    previous_sequential_p: FloatArray = field(default_factory=lambda: np.empty(0))

    def __post_init__(self) -> None:
        if self.previous_sequential_p.size == 0:
            object.__setattr__(self, "previous_sequential_p", np.full(len(self.control), np.nan))


@dataclass(frozen=True)
class ComparisonResults:
    n_control: FloatArray
    n_variant: FloatArray
    mean_control: FloatArray
    mean_variant: FloatArray
    abs_effect: FloatArray
    abs_ci_low: FloatArray
    abs_ci_high: FloatArray
    rel_effect: FloatArray
    rel_variance: FloatArray
    rel_ci_low: FloatArray
    rel_ci_high: FloatArray
    abs_p_value: FloatArray  # Welch's test of the absolute difference
    p_value: FloatArray  # the decision scale: the relative effect's t-test, as rel_ci
    adjusted_p_value: FloatArray
    significant: BoolArray
    cuped: BoolArray
    variance_reduction: FloatArray
    sequential_p_value: FloatArray
    sequential_rel_ci_low: FloatArray
    sequential_rel_ci_high: FloatArray
    chance_to_win: FloatArray
    expected_loss: FloatArray
    reasons: list[list[str]]  # why a number is missing (null) for each comparison

    def row(self, index: int) -> dict[str, Any]:
        return {name: getattr(self, name)[index] for name in self.__dataclass_fields__}


def analyze(batch: ComparisonBatch, options: AnalysisOptions) -> ComparisonResults:
    control, variant = batch.control, batch.variant
    mean_c, var_c = mean_and_variance(control)
    mean_t, var_t = mean_and_variance(variant)
    if batch.is_ratio.any():
        ratio_c, ratio_var_c = ratio_mean_and_variance(control)
        ratio_t, ratio_var_t = ratio_mean_and_variance(variant)
        mean_c = np.where(batch.is_ratio, ratio_c, mean_c)
        var_c = np.where(batch.is_ratio, ratio_var_c, var_c)
        mean_t = np.where(batch.is_ratio, ratio_t, mean_t)
        var_t = np.where(batch.is_ratio, ratio_var_t, var_t)

    cuped = batch.use_cuped & ~batch.is_ratio
    effect_mean_t, effect_var_c, effect_var_t = mean_t, var_c, var_t
    if cuped.any():
        adjusted = cuped_adjust(control, variant)
        # The relative CUPED effect divides by the unadjusted control mean (docs/design.md §10).
        effect_mean_t = np.where(cuped, mean_c + adjusted.abs_effect, mean_t)
        effect_var_c = np.where(cuped, adjusted.var_c, var_c)
        effect_var_t = np.where(cuped, adjusted.var_t, var_t)

    n_c, n_t, alpha = control.n, variant.n, options.alpha
    absolute = welch(mean_c, effect_var_c, n_c, effect_mean_t, effect_var_t, n_t, alpha)
    rel = relative(mean_c, effect_var_c, n_c, effect_mean_t, effect_var_t, n_t, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        unadjusted_variance = var_c / n_c + var_t / n_t
        variance_reduction = np.where(
            cuped & (unadjusted_variance > 0), 1 - absolute.variance / unadjusted_variance, np.nan
        )

    seq_p = msprt_p_value(rel.estimate, rel.variance, options.tau, batch.previous_sequential_p)
    seq_low, seq_high = msprt_interval(rel.estimate, rel.variance, options.tau, alpha)
    post_mean, post_var = posterior(rel.estimate, rel.variance, options.prior)

    too_small = (n_c < 2) | (n_t < 2)
    undefined_rel = (mean_c == 0) | np.isnan(rel.estimate)

    def valid(values: FloatArray, also: BoolArray | None = None) -> FloatArray:
        hide = too_small if also is None else too_small | also
        return np.where(hide, np.nan, values).astype(np.float64)

    # One scale for decisions: p_value, its adjustment and `significant` test the relative
    # effect, so they agree with rel_ci (GrowthBook reports relative effects the same way).
    p_value = valid(rel.p_value, undefined_rel)
    adjusted_p = adjust_p_values(p_value, batch.group, options.correction)
    reasons = _reasons(
        too_small,
        undefined_rel,
        effect_var_c + effect_var_t == 0,
        batch.is_ratio & ((control.den_sum == 0) | (variant.den_sum == 0)),
    )
    return ComparisonResults(
        n_control=n_c,
        n_variant=n_t,
        mean_control=valid(mean_c),
        mean_variant=valid(mean_t),
        abs_effect=valid(absolute.estimate),
        abs_ci_low=valid(absolute.ci_low),
        abs_ci_high=valid(absolute.ci_high),
        rel_effect=valid(rel.estimate, undefined_rel),
        rel_variance=valid(rel.variance, undefined_rel),
        rel_ci_low=valid(rel.ci_low, undefined_rel),
        rel_ci_high=valid(rel.ci_high, undefined_rel),
        abs_p_value=valid(absolute.p_value),
        p_value=p_value,
        adjusted_p_value=adjusted_p,
        significant=np.nan_to_num(adjusted_p, nan=1.0) < alpha,
        cuped=cuped,
        variance_reduction=valid(variance_reduction),
        sequential_p_value=valid(seq_p, undefined_rel),
        sequential_rel_ci_low=valid(seq_low, undefined_rel),
        sequential_rel_ci_high=valid(seq_high, undefined_rel),
        chance_to_win=valid(chance_to_win(post_mean, post_var), undefined_rel),
        expected_loss=valid(expected_loss(post_mean, post_var), undefined_rel),
        reasons=reasons,
    )


def _reasons(
    too_small: BoolArray,
    undefined_rel: BoolArray,
    zero_variance: BoolArray,
    zero_denominator: BoolArray,
) -> list[list[str]]:
    labelled = [
        (too_small, "n_below_2: an arm has fewer than 2 users"),
        (zero_denominator & ~too_small, "ratio_denominator_zero: an arm's denominator sums to 0"),
        (undefined_rel & ~too_small, "control_mean_zero: relative effect undefined"),
        (zero_variance & ~too_small, "zero_variance: both arms constant; the effect is exact"),
    ]
    reasons: list[list[str]] = [[] for _ in range(too_small.size)]
    for mask, label in labelled:
        for index in np.flatnonzero(mask):
            reasons[index].append(label)
    return reasons

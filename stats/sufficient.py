"""Additive sufficient statistics per arm (docs/design.md §3), held as arrays over many
comparisons. :class:`ArmStats` is the one definition of the nine statistics' names and order:
``STATISTICS`` is derived from it, and every other place that spells them out (SQL columns, the
analysis input, the attribution's row positions) is checked against it by a test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def as_array(value: Any) -> FloatArray:
    return np.atleast_1d(np.asarray(value, dtype=np.float64))


@dataclass(frozen=True)
class ArmStats:
    """Per-arm sums over users: ``y`` the metric (numerator of a ratio), ``x`` the pre-exposure
    covariate (CUPED), ``d`` a ratio metric's denominator. Every field is an array, one entry
    per comparison; a missing optional part is zeros."""

    n: FloatArray
    sum: FloatArray
    sum_sq: FloatArray
    x_sum: FloatArray
    x_sum_sq: FloatArray
    xy_sum: FloatArray
    den_sum: FloatArray
    den_sum_sq: FloatArray
    num_den_sum: FloatArray

    @classmethod
    def of(cls, n: Any, sum: Any, sum_sq: Any, **optional: Any) -> ArmStats:
        """Build from scalars or arrays; optional parts (``x_sum``, ``den_sum``, …) default to 0."""
        base = {"n": as_array(n), "sum": as_array(sum), "sum_sq": as_array(sum_sq)}
        shape = np.broadcast_shapes(*(a.shape for a in base.values()))
        unknown = set(optional) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown sufficient statistics: {sorted(unknown)}")
        values = {
            f.name: np.broadcast_to(as_array(optional.get(f.name, 0.0)), shape).astype(np.float64)
            for f in fields(cls)
            if f.name not in base
        }
        return cls(
            **{k: np.broadcast_to(v, shape).astype(np.float64) for k, v in base.items()}, **values
        )

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> ArmStats:
        """One entry per row of named statistics (SQL rows, JSON); a missing or null one is 0."""
        return cls(
            **{
                f.name: np.array([float(row.get(f.name) or 0.0) for row in rows], dtype=np.float64)
                for f in fields(cls)
            }
        )

    @classmethod
    def from_values(cls, y: Any, x: Any | None = None, den: Any | None = None) -> ArmStats:
        """Sufficient statistics of one arm's raw user-level values (tests and simulations)."""
        y_arr = np.asarray(y, dtype=np.float64)
        x_arr = np.zeros_like(y_arr) if x is None else np.asarray(x, dtype=np.float64)
        d_arr = np.zeros_like(y_arr) if den is None else np.asarray(den, dtype=np.float64)
        return cls.of(
            n=y_arr.size,
            sum=y_arr.sum(),
            sum_sq=(y_arr * y_arr).sum(),
            x_sum=x_arr.sum(),
            x_sum_sq=(x_arr * x_arr).sum(),
            xy_sum=(x_arr * y_arr).sum(),
            den_sum=d_arr.sum(),
            den_sum_sq=(d_arr * d_arr).sum(),
            num_den_sum=(y_arr * d_arr).sum(),
        )

    def __add__(self, other: ArmStats) -> ArmStats:
        return ArmStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def __len__(self) -> int:
        return int(self.n.size)

    @staticmethod
    def concat(parts: list[ArmStats]) -> ArmStats:
        return ArmStats(
            **{
                f.name: np.concatenate([getattr(p, f.name) for p in parts])
                for f in fields(ArmStats)
            }
        )


STATISTICS: tuple[str, ...] = tuple(f.name for f in fields(ArmStats))


def centred(sum_ab: FloatArray, sum_a: FloatArray, sum_b: FloatArray, n: FloatArray) -> FloatArray:
    """``S_ab = Σab − Σa·Σb/n``: the centred sum of products from raw sums."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return sum_ab - sum_a * sum_b / n


def mean_and_variance(arm: ArmStats) -> tuple[FloatArray, FloatArray]:
    """``mean = Σy/n`` and the unbiased ``var = (Σy² − (Σy)²/n)/(n−1)`` (docs/design.md §10)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = arm.sum / arm.n
        variance = centred(arm.sum_sq, arm.sum, arm.sum, arm.n) / (arm.n - 1)
    # Round-off leaves a tiny non-zero variance for constant data: that is exactly zero.
    tolerance = 1e-12 * np.maximum(np.abs(arm.sum_sq) / np.maximum(arm.n, 1), 1.0)
    variance = np.where(np.abs(variance) < tolerance, 0.0, variance)
    return mean, variance


def ratio_mean_and_variance(arm: ArmStats) -> tuple[FloatArray, FloatArray]:
    """Ratio-of-sums ``R = Σnum/Σden`` and ``n·Var(R)`` by the delta method, so that the result
    plugs into the same formulas as a plain mean (``var/n`` is the estimator's variance).

    Source: Deng et al. 2018, "Applying the Delta Method in Metric Analytics", eq. (3);
    GrowthBook gbstats ``RatioStatistic.variance``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_num = arm.sum / arm.n
        mean_den = arm.den_sum / arm.n
        var_num = centred(arm.sum_sq, arm.sum, arm.sum, arm.n) / (arm.n - 1)
        var_den = centred(arm.den_sum_sq, arm.den_sum, arm.den_sum, arm.n) / (arm.n - 1)
        cov = centred(arm.num_den_sum, arm.sum, arm.den_sum, arm.n) / (arm.n - 1)
        ratio = mean_num / mean_den
        variance = (
            var_num / mean_den**2
            - 2 * mean_num * cov / mean_den**3
            + mean_num**2 * var_den / mean_den**4
        )
    return ratio, variance

"""Deterministic variant assignment, compatible with GrowthBook's SDKs (DESIGN.md §4).

Source: GrowthBook JS SDK `util.ts` (`hash`, `getBucketRanges`, `chooseVariation`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193
WEIGHT_TOLERANCE = 0.01


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a over Unicode code points, as GrowthBook hashes (``charCodeAt`` per char)."""
    value = FNV_OFFSET
    for char in text:
        value ^= ord(char)
        value = (value * FNV_PRIME) & 0xFFFFFFFF
    return value


def hash_unit(seed: str, user_id: str, version: int) -> float | None:
    """The user's position in [0, 1) for a seed; None for an unknown hash version."""
    if version == 2:
        return fnv1a32(str(fnv1a32(seed + user_id))) % 10000 / 10000
    if version == 1:
        return fnv1a32(user_id + seed) % 1000 / 1000
    return None


def bucket_ranges(
    num_variants: int, coverage: float = 1.0, weights: Sequence[float] | None = None
) -> list[tuple[float, float]]:
    """Ranges ``[c_i, c_i + coverage·w_i)``; lowering coverage never moves a user between arms."""
    coverage = min(max(coverage, 0.0), 1.0)
    equal = [1.0 / num_variants] * num_variants if num_variants > 0 else []
    chosen = list(weights) if weights is not None else equal
    if len(chosen) != num_variants or abs(sum(chosen) - 1.0) > WEIGHT_TOLERANCE:
        chosen = equal
    ranges = []
    start = 0.0
    for weight in chosen:
        ranges.append((start, start + coverage * weight))
        start += weight
    return ranges


def choose_variant(unit: float, ranges: Sequence[tuple[float, float]]) -> int:
    """Index of the range holding ``unit``, or -1 when the user is outside every range."""
    for index, (low, high) in enumerate(ranges):
        if low <= unit < high:
            return index
    return -1


def assign(
    user_id: str,
    seed: str,
    weights: Sequence[float],
    coverage: float = 1.0,
    hash_version: int = 2,
) -> int:
    """Variant index for one user, or -1 when not in the experiment."""
    unit = hash_unit(seed, user_id, hash_version)
    if unit is None:
        return -1
    return choose_variant(unit, bucket_ranges(len(weights), coverage, weights))


def assign_many(
    user_ids: Sequence[str],
    seed: str,
    weights: Sequence[float],
    coverage: float = 1.0,
    hash_version: int = 2,
) -> npt.NDArray[np.int64]:
    """Variant indices for many users at once (-1: not in the experiment)."""
    units = np.array(
        [hash_unit(seed, user_id, hash_version) for user_id in user_ids], dtype=np.float64
    )
    ranges = np.array(bucket_ranges(len(weights), coverage, weights), dtype=np.float64)
    inside = (units[:, None] >= ranges[None, :, 0]) & (units[:, None] < ranges[None, :, 1])
    return np.where(inside.any(axis=1), inside.argmax(axis=1), -1).astype(np.int64)

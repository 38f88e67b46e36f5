"""Deterministic variant assignment, compatible with GrowthBook's SDKs (docs/design.md §4).

Source: GrowthBook JS SDK `util.ts` (`hash`, `getBucketRanges`, `chooseVariation`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193
WEIGHT_TOLERANCE = 0.01


def _utf16_units(text: str) -> npt.NDArray[np.uint16]:
    """JavaScript's ``charCodeAt`` sequence: UTF-16 code units (surrogate pairs outside the BMP)."""
    return np.frombuffer(text.encode("utf-16-le", "surrogatepass"), dtype=np.uint16)


def fnv1a32(text: str, start: int = FNV_OFFSET) -> int:
    """32-bit FNV-1a over UTF-16 code units, as GrowthBook's SDKs hash (``charCodeAt``);
    ``start`` continues from the hash of a prefix (FNV is a left fold)."""
    value = start
    for unit in text.encode() if text.isascii() else _utf16_units(text).tolist():
        value ^= unit
        value = (value * FNV_PRIME) & 0xFFFFFFFF
    return value


def fnv1a32_many(texts: Sequence[str]) -> npt.NDArray[np.uint64]:
    """:func:`fnv1a32` of many strings at once: one numpy step per character position."""
    units = [_utf16_units(text) for text in texts]
    lengths = np.array([u.size for u in units], dtype=np.int64)
    width = int(lengths.max()) if units else 0
    codes = np.zeros((len(units), width), dtype=np.uint64)
    if width:
        mask = np.arange(width)[None, :] < lengths[:, None]
        codes[mask] = np.concatenate(units).astype(np.uint64)
    values = np.full(len(units), FNV_OFFSET, dtype=np.uint64)
    for position in range(width):
        mixed = ((values ^ codes[:, position]) * np.uint64(FNV_PRIME)) & np.uint64(0xFFFFFFFF)
        values = np.where(position < lengths, mixed, values)
    return values


def hash_unit(seed: str, user_id: str, version: int, seed_state: int | None = None) -> float | None:
    """The user's position in [0, 1) for a seed; None for an unknown hash version.
    ``seed_state`` (``fnv1a32(seed)``) spares rehashing the seed for every user (version 2)."""
    if version == 2:
        inner = fnv1a32(user_id, fnv1a32(seed) if seed_state is None else seed_state)
        return fnv1a32(str(inner)) % 10000 / 10000
    if version == 1:
        return fnv1a32(user_id + seed) % 1000 / 1000
    return None


def hash_units(seed: str, user_ids: Sequence[str], version: int) -> npt.NDArray[np.float64]:
    """:func:`hash_unit` for many users (NaN for an unknown hash version)."""
    if version == 2:
        inner = fnv1a32_many([seed + user_id for user_id in user_ids])
        outer = fnv1a32_many([str(int(value)) for value in inner])
        return (outer % 10000).astype(np.float64) / 10000
    if version == 1:
        return (fnv1a32_many([u + seed for u in user_ids]) % 1000).astype(np.float64) / 1000
    return np.full(len(user_ids), np.nan)


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
    units = hash_units(seed, user_ids, hash_version)
    ranges = np.array(bucket_ranges(len(weights), coverage, weights), dtype=np.float64)
    inside = (units[:, None] >= ranges[None, :, 0]) & (units[:, None] < ranges[None, :, 1])
    return np.where(inside.any(axis=1), inside.argmax(axis=1), -1).astype(np.int64)

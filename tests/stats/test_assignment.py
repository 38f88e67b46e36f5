"""Assignment hashing against GrowthBook's published SDK cases, and its split over many users."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from stats.assignment import assign, assign_many, bucket_ranges, fnv1a32, hash_unit, hash_units

# GrowthBook SDK spec, packages/sdk-js/test/cases.json, "hash": [seed, value, version, expected].
HASH_CASES = [
    ("", "a", 1, 0.22),
    ("", "b", 1, 0.077),
    ("b", "a", 1, 0.946),
    ("ef", "d", 1, 0.652),
    ("asdf", "8952klfjas09ujk", 1, 0.549),
    ("", "123", 1, 0.011),
    ("", '___)((*":&', 1, 0.563),
    ("seed", "a", 2, 0.0505),
    ("seed", "b", 2, 0.2696),
    ("foo", "ab", 2, 0.2575),
    ("foo", "def", 2, 0.2019),
    ("89123klj", "8952klfjas09ujkasdf", 2, 0.124),
    ("90850943850283058242805", "123", 2, 0.7516),
    ("()**(%$##$%#$#", '___)((*":&', 2, 0.0128),
    ("", "a", 99, None),
]

# Same file, "getBucketRange": [numVariations, coverage, weights] -> ranges.
BUCKET_CASES = [
    ((2, 1, None), [(0, 0.5), (0.5, 1)]),
    ((2, 0.5, None), [(0, 0.25), (0.5, 0.75)]),
    ((2, 0, None), [(0, 0), (0.5, 0.5)]),
    ((4, 1, None), [(0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1)]),
    ((2, 1, [0.4, 0.6]), [(0, 0.4), (0.4, 1)]),
    ((3, 1, [0.2, 0.3, 0.5]), [(0, 0.2), (0.2, 0.5), (0.5, 1)]),
    ((3, 0.2, [0.2, 0.3, 0.5]), [(0, 0.04), (0.2, 0.26), (0.5, 0.6)]),
    ((2, -0.2, None), [(0, 0), (0.5, 0.5)]),
    ((2, 1.5, None), [(0, 0.5), (0.5, 1)]),
    ((2, 1, [0.4, 0.1]), [(0, 0.5), (0.5, 1)]),
    ((2, 1, [0.7, 0.6]), [(0, 0.5), (0.5, 1)]),
    ((4, 1, [0.4, 0.4, 0.2]), [(0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1)]),
    ((2, 1, [0.4, 0.5999]), [(0, 0.4), (0.4, 0.9999)]),
]


@pytest.mark.parametrize(("seed", "value", "version", "expected"), HASH_CASES)
def test_growthbook_hash_cases(seed: str, value: str, version: int, expected: float | None) -> None:
    assert hash_unit(seed, value, version) == expected
    [vectorised] = hash_units(seed, [value], version)
    if expected is None:
        assert np.isnan(vectorised)
    else:
        assert vectorised == expected


@pytest.mark.parametrize(("args", "expected"), BUCKET_CASES)
def test_growthbook_bucket_range_cases(
    args: tuple[int, float, list[float] | None], expected: list[tuple[float, float]]
) -> None:
    got = bucket_ranges(*args)
    assert np.round(got, 6).tolist() == [list(r) for r in expected]


def test_fnv_reference_values_and_utf16() -> None:
    # FNV-1a 32-bit reference values (Fowler/Noll/Vo test vectors).
    assert [fnv1a32(s) for s in ("", "a", "foobar")] == [0x811C9DC5, 0xE40C292C, 0xBF9CF968]
    # Outside the BMP, JavaScript hashes the two UTF-16 surrogates, not the code point.
    assert fnv1a32("😀") == fnv1a32(
        "\ud83d\ude00".encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    )
    expected = 0x811C9DC5
    for unit in (0xD83D, 0xDE00):
        expected = ((expected ^ unit) * 0x01000193) & 0xFFFFFFFF
    assert fnv1a32("😀") == expected


def test_vectorised_equals_scalar_and_split_passes_srm() -> None:
    users = [f"user-{i}" for i in range(100_000)] + ["émile", "李", "😀x"]
    weights = [0.2, 0.3, 0.5]
    many = assign_many(users, "split-seed", weights, coverage=1.0, hash_version=2)
    scalar = [assign(u, "split-seed", weights, 1.0, 2) for u in users[::997]]
    assert many[::997].tolist() == scalar
    counts = np.bincount(many[:100_000], minlength=3)
    assert sps.chisquare(counts, np.array(weights) * 100_000).pvalue > 0.001


def test_outside_coverage_is_not_in_the_experiment() -> None:
    users = [f"u{i}" for i in range(20_000)]
    full = assign_many(users, "cov", [0.5, 0.5], coverage=1.0, hash_version=2)
    half = assign_many(users, "cov", [0.5, 0.5], coverage=0.5, hash_version=2)
    assert 0.45 < (half == -1).mean() < 0.55
    inside = half >= 0
    assert (half[inside] == full[inside]).all()  # lowering coverage never moves a user

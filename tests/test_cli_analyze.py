"""`xpstream analyze`: the JSON contract of docs/design.md §11 and clear errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

XPSTREAM = str(Path(sys.executable).with_name("xpstream"))

RESULT_FIELDS = {
    "experiment",
    "metric",
    "variant",
    "control",
    "n_control",
    "n_variant",
    "mean_control",
    "mean_variant",
    "abs_effect",
    "abs_ci",
    "rel_effect",
    "rel_ci",
    "abs_p_value",
    "p_value",
    "adjusted_p_value",
    "significant",
    "cuped",
    "variance_reduction",
    "sequential_p_value",
    "sequential_rel_ci",
    "chance_to_win",
    "expected_loss",
}


def arm(values: np.ndarray, x: np.ndarray | None = None) -> dict[str, float]:
    out = {"n": float(values.size), "sum": float(values.sum()), "sum_sq": float((values**2).sum())}
    if x is not None:
        out |= {
            "x_sum": float(x.sum()),
            "x_sum_sq": float((x**2).sum()),
            "xy_sum": float((x * values).sum()),
        }
    return out


def relative_p_value(treatment: np.ndarray, control: np.ndarray) -> float:
    """The t-test of r = mean_t/mean_c − 1 from raw values: delta-method variance, Welch df."""
    m_c, m_t = control.mean(), treatment.mean()
    v_c, v_t = control.var(ddof=1) / control.size, treatment.var(ddof=1) / treatment.size
    variance = v_t / m_c**2 + m_t**2 * v_c / m_c**4
    df = (v_c + v_t) ** 2 / (v_c**2 / (control.size - 1) + v_t**2 / (treatment.size - 1))
    return float(2 * sps.t.sf(abs(m_t / m_c - 1) / np.sqrt(variance), df))


def analyze(
    payload: Any, *, via_stdin: bool = False, tmp_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    if via_stdin:
        return subprocess.run(
            [XPSTREAM, "analyze", "--input", "-"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert tmp_path is not None
    path = tmp_path / "input.json"
    path.write_text(text)
    return subprocess.run(
        [XPSTREAM, "analyze", "--input", str(path)], capture_output=True, text=True, timeout=60
    )


def test_analyze_matches_scipy_and_statsmodels(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    control, t1, t2 = rng.normal(10, 3, 900), rng.normal(10.4, 3, 950), rng.normal(10, 3, 920)
    errors_c, errors_t1, errors_t2 = (rng.poisson(1.0, s).astype(float) for s in (900, 950, 920))
    payload = {
        "alpha": 0.05,
        "correction": "holm",
        "comparisons": [
            {
                "experiment": "e",
                "metric": "revenue",
                "kind": "sum",
                "control": "control",
                "expected_split": {"control": 1 / 3, "t1": 1 / 3, "t2": 1 / 3},
                "arms": {"control": arm(control), "t1": arm(t1), "t2": arm(t2)},
            },
            {
                "experiment": "e",
                "metric": "errors",
                "kind": "count",
                "control": "control",
                "arms": {"control": arm(errors_c), "t1": arm(errors_t1), "t2": arm(errors_t2)},
            },
        ],
    }
    result = analyze(payload, via_stdin=True)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    rows = {(r["metric"], r["variant"]): r for r in output["results"]}
    assert set(rows) == {("revenue", "t1"), ("revenue", "t2"), ("errors", "t1"), ("errors", "t2")}
    assert all(set(r) >= RESULT_FIELDS for r in rows.values())
    raw = {
        ("revenue", "t1"): (t1, control),
        ("revenue", "t2"): (t2, control),
        ("errors", "t1"): (errors_t1, errors_c),
        ("errors", "t2"): (errors_t2, errors_c),
    }
    keys = list(raw)
    abs_p_values = [sps.ttest_ind(*raw[k], equal_var=False).pvalue for k in keys]
    p_values = [relative_p_value(*raw[k]) for k in keys]
    holm = multipletests(p_values, method="holm")[1]
    for key, abs_p, p, adjusted in zip(keys, abs_p_values, p_values, holm, strict=True):
        assert rows[key]["abs_p_value"] == pytest.approx(abs_p, rel=1e-9)
        assert rows[key]["p_value"] == pytest.approx(p, rel=1e-9)
        assert rows[key]["adjusted_p_value"] == pytest.approx(adjusted, rel=1e-9)
    counts = [900, 950, 920]
    srm = sps.chisquare(counts).pvalue
    assert output["srm"] == [
        {"experiment": "e", "p_value": pytest.approx(srm, rel=1e-9), "mismatch": False}
    ]


def test_analyze_cuped_reports_variance_reduction(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    x_c, x_t = rng.normal(5, 2, 500), rng.normal(5, 2, 500)
    y_c, y_t = x_c + rng.normal(0, 1, 500), x_t + 0.2 + rng.normal(0, 1, 500)
    payload = {
        "comparisons": [
            {
                "experiment": "e",
                "metric": "m",
                "control": "c",
                "arms": {"c": arm(y_c, x_c), "t": arm(y_t, x_t)},
            }
        ]
    }
    result = analyze(payload, tmp_path=tmp_path)
    row = json.loads(result.stdout)["results"][0]
    assert row["cuped"] is True
    assert 0.6 < row["variance_reduction"] < 0.9


def test_control_mean_zero_is_null_with_a_reason(tmp_path: Path) -> None:
    payload = {
        "comparisons": [
            {
                "experiment": "e",
                "metric": "m",
                "control": "c",
                "arms": {
                    "c": {"n": 100, "sum": 0, "sum_sq": 0},
                    "t": {"n": 100, "sum": 5, "sum_sq": 5},
                },
            }
        ]
    }
    row = json.loads(analyze(payload, tmp_path=tmp_path).stdout)["results"][0]
    assert row["rel_effect"] is None and row["rel_ci"] is None
    assert row["p_value"] is None and row["significant"] is False
    assert row["abs_p_value"] is not None
    assert any("control_mean_zero" in note for note in row["notes"])


GOOD_ARM = {"n": 100, "sum": 500.0, "sum_sq": 3000.0}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("{not json", "not valid JSON"),
        (
            {
                "comparisons": [
                    {
                        "experiment": "exp-a",
                        "metric": "rev",
                        "control": "c",
                        "arms": {"c": {"n": 1, "sum": 1, "sum_sq": 1}, "t": GOOD_ARM},
                    }
                ]
            },
            "comparison 0 (exp-a/rev): arms.c.n",
        ),
        (
            {
                "comparisons": [
                    {
                        "experiment": "exp-a",
                        "metric": "rev",
                        "control": "c",
                        "arms": {"c": GOOD_ARM, "t": {"n": 100, "sum": 500, "sum_sq": 10}},
                    }
                ]
            },
            "comparison 0 (exp-a/rev): arms.t.sum_sq: negative variance",
        ),
        (
            {
                "comparisons": [
                    {
                        "experiment": "exp-a",
                        "metric": "rev",
                        "control": "ctl",
                        "arms": {"c": GOOD_ARM, "t": GOOD_ARM},
                    }
                ]
            },
            "comparison 0 (exp-a/rev): control: arm 'ctl'",
        ),
        (
            {
                "comparisons": [
                    {
                        "experiment": "exp-b",
                        "metric": "m",
                        "control": "c",
                        "arms": {"c": {"n": "many", "sum": 1, "sum_sq": 1}, "t": GOOD_ARM},
                    }
                ]
            },
            "comparison 0 (exp-b/m): arms.c.n",
        ),
    ],
    ids=["malformed-json", "n-below-2", "negative-variance", "unknown-control", "wrong-type"],
)
def test_bad_input_exits_non_zero_naming_comparison_and_field(
    tmp_path: Path, payload: Any, expected: str
) -> None:
    result = analyze(payload, tmp_path=tmp_path)
    assert result.returncode != 0
    assert expected in " ".join(result.stderr.split()), result.stderr
    assert result.stdout == ""


def test_missing_input_file_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [XPSTREAM, "analyze", "--input", str(tmp_path / "nope.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "cannot read --input" in result.stderr


def test_growthbook_example_is_not_significant_on_the_relative_scale(tmp_path: Path) -> None:
    """GrowthBook's published example: relative lift 0.707 with CI [-0.035, 1.450] spans 0, so
    it is not significant, though Welch's absolute test alone gives p = 0.020."""
    payload = {
        "correction": "none",
        "comparisons": [
            {
                "experiment": "e",
                "metric": "m",
                "control": "control",
                "arms": {
                    "control": {"n": 3407, "sum": 1396.87, "sum_sq": 52377.9767},
                    "treatment": {"n": 3461, "sum": 2422.7, "sum_sq": 134698.29},
                },
            }
        ],
    }
    row = json.loads(analyze(payload, tmp_path=tmp_path).stdout)["results"][0]
    assert row["rel_effect"] == pytest.approx(0.707, abs=5e-4)
    assert row["rel_ci"] == [pytest.approx(-0.035, abs=5e-4), pytest.approx(1.450, abs=5e-4)]
    assert row["abs_p_value"] == pytest.approx(0.0202, abs=5e-5)
    assert row["significant"] is False
    assert 0.05 < row["p_value"] < 0.1

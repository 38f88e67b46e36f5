"""The design lives in the repository: every ``docs/design.md §N`` reference in the code, the
tests and the README names a section that exists, and nothing points at a file outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
# "docs/design.md §5", "docs/design.md §1, §10", "docs/design.md §5's"
REFERENCE = re.compile(r"docs/design\.md((?:[ ,]*(?:and )?§\d+)+)")


def tracked_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in names if (ROOT / name).is_file()]


def sections() -> set[int]:
    headings = re.findall(r"^## (\d+)\. ", DESIGN.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {int(number) for number in headings}


def test_every_design_reference_names_a_section() -> None:
    existing = sections()
    assert existing == set(range(1, max(existing) + 1)), "sections are numbered 1..N"
    references = 0
    for path in tracked_files():
        if path == DESIGN or path.suffix not in {".py", ".md", ".toml", ".yml", ".yaml", ""}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in REFERENCE.finditer(text):
            for number in re.findall(r"§(\d+)", match.group(1)):
                references += 1
                assert int(number) in existing, f"{path.relative_to(ROOT)}: §{number}"
    assert references >= 20  # the references are found at all


def test_nothing_points_outside_the_repository() -> None:
    outside = re.compile(r"\bDESIGN\.md\b|\bNOTES\.md\b|\.\./shared\b")
    for path in tracked_files():
        if path.suffix in {".so", ".png", ".jar"}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found = [m.group(0) for m in outside.finditer(text)]
        assert not found, f"{path.relative_to(ROOT)} refers to {found}"

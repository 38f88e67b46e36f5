"""GrowthBook's JavaScript SDK (npm ``@growthbook/growthbook``), unmodified, run by node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.services.apache_kafka import CACHE_ROOT

VERSION = "1.8.0"
EVALUATE = Path(__file__).with_name("growthbook-evaluate.js")


def sdk_root() -> Path:
    """npm-installed once into the test cache; later runs work offline."""
    root = CACHE_ROOT / f"growthbook-js-{VERSION}"
    if (root / ".complete").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("the JavaScript SDK tests need Node.js with npm on PATH")
    subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(root),
            f"@growthbook/growthbook@{VERSION}",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (root / ".complete").touch()
    return root


def evaluate_in_node(
    payload_url: str, users: list[dict[str, Any]], features: list[str], work: Path
) -> list[dict[str, Any]]:
    """Per user, per feature: the SDK's value and experiment variant (``meta`` key), with the
    payload the SDK itself fetched from ``payload_url``."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("the JavaScript SDK tests need Node.js on PATH")
    request = work / "request.json"
    request.write_text(json.dumps({"url": payload_url, "users": users, "features": features}))
    done = subprocess.run(
        [node, str(EVALUATE), str(request)],
        env={"NODE_PATH": str(sdk_root() / "node_modules"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results

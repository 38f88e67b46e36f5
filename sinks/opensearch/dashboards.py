"""The OpenSearch Dashboards saved objects (index patterns, visualisations, the alerts table and
a dashboard) and their installation through the Dashboards saved-objects import API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

SAVED_OBJECTS = Path(__file__).with_name("dashboards.ndjson")
DEFAULT_PREFIX = "xpstream"


def saved_objects(prefix: str = DEFAULT_PREFIX) -> bytes:
    """The ndjson file, its index patterns renamed when the indices have another prefix."""
    text = SAVED_OBJECTS.read_text(encoding="utf-8")
    if prefix != DEFAULT_PREFIX:
        text = text.replace(f'"{DEFAULT_PREFIX}-', f'"{prefix}-')
    return text.encode()


def install(
    url: str, prefix: str, auth: tuple[str, str] | None = None, verify: bool | str = True
) -> dict[str, Any]:
    """POST the objects to ``{url}/api/saved_objects/_import?overwrite=true``."""
    response = requests.post(
        f"{url.rstrip('/')}/api/saved_objects/_import",
        params={"overwrite": "true"},
        headers={"osd-xsrf": "true"},
        files={"file": ("xpstream.ndjson", saved_objects(prefix), "application/ndjson")},
        auth=auth,
        verify=verify,
        timeout=30,
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result

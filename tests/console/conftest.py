"""The console in a real browser: Debian's headless Chromium driven by its chromedriver
(`make test` installs both when missing), against `xpstream api`'s app served by uvicorn on
loopback, on the database the demo leaves."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from sqlalchemy import Engine

from api.app import create_app
from config.settings import Settings
from sinks.sql.keys import create_api_key
from sinks.sql.store import make_engine
from tests.api.conftest import live_server
from tests.conftest import Demo

ROLES = ("viewer", "analyst", "developer", "admin")
# Screenshots of every page the tests visit: the CI keeps them as artefacts.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


@dataclass(frozen=True)
class Console:
    url: str
    engine: Engine
    keys: dict[str, str]  # role → key


@pytest.fixture(scope="module")
def console(demo: Demo) -> Iterator[Console]:
    engine = make_engine(demo.database_url)
    keys = {role: create_api_key(engine, role, f"console {role}") for role in (*ROLES, "client")}
    settings = Settings(database_url=demo.database_url, namespace="console", partitions=4)
    with live_server(create_app(settings, engine, "")) as url:
        yield Console(url, engine, keys)
    engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver_path = shutil.which("chromedriver")
    if driver_path is None or shutil.which("chromium") is None:
        pytest.fail("chromium and chromedriver are missing: `make test` installs them")
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # Nothing but loopback: no traffic leaves the machine.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()

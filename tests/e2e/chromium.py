"""Headless Chromium (Debian ``chromium`` + ``chromium-driver``) driven by Selenium, as a
pytest fixture: ``chromium`` yields a factory of fresh browsers, each with its own profile,
all quit at the end. Import the fixture into a test module (``from tests.e2e.chromium import
chromium``) or a conftest."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BASE_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")


def start_chromium(profile: Path, extra_flags: tuple[str, ...] = ()) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*BASE_FLAGS, f"--user-data-dir={profile}", *extra_flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    return driver


@pytest.fixture
def chromium() -> Iterator[Callable[..., webdriver.Chrome]]:
    drivers: list[webdriver.Chrome] = []
    profiles: list[tempfile.TemporaryDirectory] = []

    def make(*extra_flags: str) -> webdriver.Chrome:
        profile = tempfile.TemporaryDirectory(prefix="mediagate-chromium-")
        profiles.append(profile)
        driver = start_chromium(Path(profile.name), extra_flags)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        with contextlib.suppress(Exception):  # a crashed browser must not hide the test's own failure
            driver.quit()
    for profile in profiles:
        profile.cleanup()

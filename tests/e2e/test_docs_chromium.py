"""``/docs`` as a person sees it: headless Chromium loads the Swagger UI page, the page fetches
the API definition and lists every operation of the served OpenAPI document."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.chromium import chromium  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e


def operations_on_page(driver: Any, url: str, expected: int) -> tuple[list[tuple[str, str]], str]:
    driver.get(url)
    WebDriverWait(driver, 120, poll_frequency=0.25).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= expected
        or d.find_elements(By.CSS_SELECTOR, ".errors-wrapper, .loading-container .errors"))
    found = []
    for block in driver.find_elements(By.CSS_SELECTOR, ".opblock"):
        method = block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text.strip().lower()
        path = block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path")
        found.append((method, path))
    errors = " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".errors-wrapper"))
    return found, errors


async def test_docs_page_lists_every_operation(client: Any, node: Any, chromium: Any) -> None:  # noqa: F811
    spec = await (await client.get("/openapi.json")).json()
    expected = sorted((method, path) for path, item in spec["paths"].items() for method in item)
    assert len(expected) > 20
    driver = await asyncio.to_thread(chromium)
    # Selenium blocks: drive the browser on a thread while this loop serves the page
    found, errors = await asyncio.to_thread(operations_on_page, driver, f"{node.url}/docs", len(expected))
    assert not errors, errors
    assert sorted(found) == expected
    title = await asyncio.to_thread(lambda: driver.find_element(By.CSS_SELECTOR, ".info .title").text)
    assert "mediagate" in title

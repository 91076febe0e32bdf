"""Headless Chromium (Debian ``chromium`` + ``chromium-driver``) driven by Selenium, as a
pytest fixture: ``chromium`` yields a factory of fresh browsers, each with its own profile,
all quit at the end. Import the fixture into a test module (``from tests.e2e.chromium import
chromium``) or a conftest."""

from __future__ import annotations

import contextlib
import subprocess
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


def fake_media(directory: Path, name: str, colour: str, tone_hz: float) -> tuple[Path, Path]:
    """A y4m of one colour and a wav of one tone; Chromium loops both as its camera and mic."""
    y4m, wav = directory / f"{name}.y4m", directory / f"{name}.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"color=c=0x{colour}:s=320x240:r=15",
                    "-t", "2", "-pix_fmt", "yuv420p", str(y4m)], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"sine=f={tone_hz}:r=48000",
                    "-t", "2", "-af", "volume=3", "-ac", "1", "-c:a", "pcm_s16le", str(wav)], check=True)
    return y4m, wav


MEDIA_FLAGS = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
               "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
               "--auto-select-desktop-capture-source=Entire screen", "--window-size=1280,800")


def launch(y4m: Path, wav: Path) -> webdriver.Chrome:
    """A browser whose camera and microphone are the given files (its own fresh profile)."""
    profile = Path(tempfile.mkdtemp(prefix="mediagate-chromium-"))
    driver = start_chromium(profile, (*MEDIA_FLAGS, f"--use-file-for-fake-video-capture={y4m}",
                                      f"--use-file-for-fake-audio-capture={wav}"))
    driver.set_script_timeout(120)
    return driver

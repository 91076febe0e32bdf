"""Headless Chromium (Debian's, driven by Selenium and the Debian chromedriver) with fake
camera and microphone files of a known colour and tone."""

from __future__ import annotations

import subprocess
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def fake_media(directory: Path, name: str, colour: str, tone_hz: float) -> tuple[Path, Path]:
    """A y4m of one colour and a wav of one tone; Chromium loops both."""
    y4m, wav = directory / f"{name}.y4m", directory / f"{name}.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"color=c=0x{colour}:s=320x240:r=15",
                    "-t", "2", "-pix_fmt", "yuv420p", str(y4m)], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"sine=f={tone_hz}:r=48000",
                    "-t", "2", "-af", "volume=3", "-ac", "1", "-c:a", "pcm_s16le", str(wav)], check=True)
    return y4m, wav


def launch(y4m: Path, wav: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--use-fake-device-for-media-stream",
                 "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={y4m}",
                 f"--use-file-for-fake-audio-capture={wav}", "--allow-loopback-in-peer-connection",
                 "--autoplay-policy=no-user-gesture-required", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--auto-select-desktop-capture-source=Entire screen", "--window-size=1280,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(120)
    return driver

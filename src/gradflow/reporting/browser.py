"""TensorBoard as a person sees it: a server on 127.0.0.1 started with the flags gradflow
prints, its dashboards opened in headless Chromium and photographed.

Chromium is Debian's (`apt-get install chromium`); Playwright (`pip install -e ".[docs]"`)
drives it, with no browser download of its own. Used by the browser test and by
`scripts/screenshots.py`, which regenerates the README's pictures.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gradflow.names import TENSORBOARD_FLAGS

# Headless, and nothing that reaches out of this machine.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> str | None:
    """The Chromium executable on this machine, if there is one."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _runs(base: str) -> list[str]:
    with urllib.request.urlopen(f"{base}/data/runs", timeout=5) as response:
        return json.loads(response.read())


@contextmanager
def tensorboard(logdir: Path, runs: int, timeout_s: float = 120) -> Iterator[str]:
    """`tensorboard --logdir <logdir> <gradflow's flags>` on a free local port, once it lists
    `runs` runs; yields its address and stops it afterwards."""
    port = _free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
           "--host", "127.0.0.1", "--port", str(port), *TENSORBOARD_FLAGS.split()]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if len(_runs(base)) >= runs:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tensorboard did not serve {logdir}: {server.stderr.read()}")
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def browser_page(width: int = 1400, height: int = 900) -> Iterator[Any]:
    """A Playwright page in headless Chromium, `width` x `height` CSS pixels."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    if executable is None:
        raise RuntimeError("Chromium is not installed: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def open_dashboard(page: Any, base: str, dashboard: str, ready_text: str) -> None:
    """Open one of TensorBoard's dashboards and wait until `ready_text` shows (TensorBoard
    fetches its data after the page loads)."""
    page.goto(f"{base}/#{dashboard}")
    page.get_by_text(ready_text).first.wait_for(timeout=60_000)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(1_000)  # the charts draw after their data arrives


def rendered_images(page: Any) -> list[Any]:
    """The `<img>` elements of the page (shadow roots included) that hold a decoded picture."""
    images = page.locator("img")
    return [
        images.nth(i)
        for i in range(images.count())
        if images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    ]

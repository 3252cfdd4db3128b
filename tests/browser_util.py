"""Helpers for the browser tests: a `streamlit run` subprocess on a free port, Debian's chromium
through Playwright, and small waits that understand Streamlit's DOM.

Streamlit puts a widget's key in a class on its container (`st-key-<key>`), so
`page.locator(".st-key-run_step button")` is the Run step button; elements carry `data-testid`s
(stPlotlyChart, stDataFrame, stMetric, stProgress…).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.conftest import subprocess_pythonpath

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = ROOT / "tests" / "screenshots"  # git-ignored


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamlitServer:
    """`streamlit run app.py` on 127.0.0.1:<free port> with the given environment (a child of this process)."""

    def __init__(self, env: dict[str, str], *, port: int | None = None, log: Path | None = None):
        self.env = env
        self.port = port or free_port()
        self.log = log
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "StreamlitServer":
        cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(self.port),
               "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log, "ab")
        out = self._log_file or subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}; log: {self.tail()}")
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                        f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise RuntimeError(f"streamlit did not become healthy in {timeout:.0f}s ({last}); log: {self.tail()}")

    def tail(self, n: int = 4000) -> str:
        if self.log is None or not self.log.exists():
            return "(no log)"
        return self.log.read_bytes()[-n:].decode("utf-8", "replace")

    def kill9(self) -> None:
        """SIGKILL the server process (a crash: no cleanup, no flush)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


@contextmanager
def streamlit_server(env: dict[str, str], *, log: Path | None = None) -> Iterator[StreamlitServer]:
    server = StreamlitServer(env, log=log).start()
    try:
        yield server
    finally:
        server.stop()


def app_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The server's environment: its own sessions and cache folders, threaded jobs, no keys."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PGS_INLINE_JOBS", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL",
                        "PGS_FAKE_DELAY")}
    env.update(PGS_SESSIONS_DIR=str(tmp / "sessions"), PGS_CACHE_DIR=str(tmp / "cache"),
               PYTHONPATH=subprocess_pythonpath(fake_provider=False),  # real SDKs against the stub servers only
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    env.update(extra)
    return env


def launch(playwright, **kw):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, **kw)


# ---------------------------------------------------------------- Streamlit-aware waits and actions


_BUSY = ('[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidgetRunningManIcon"], '
         '[data-testid="stSkeleton"], [data-testid="stAppSkeleton"]')


def wait_idle(page, timeout: float = 30.0, settle: float = 0.3) -> None:
    """Wait until the script is not running (no running icon in the status widget, no element skeletons)
    for `settle` seconds in a row."""
    deadline = time.time() + timeout
    quiet_since = None
    while time.time() < deadline:
        busy = page.evaluate("""(sel) => Array.from(document.querySelectorAll(sel))
            .some(e => e.offsetWidth > 0 || e.offsetHeight > 0)""", _BUSY)
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since >= settle:
            return
        page.wait_for_timeout(100)
    raise TimeoutError("the Streamlit script kept running")


def key(page, name: str):
    """The element container of the widget with this key."""
    return page.locator(f".st-key-{name}")


def click_key(page, name: str, timeout: float = 30.0) -> None:
    btn = key(page, name).locator("button").first
    btn.wait_for(state="visible", timeout=timeout * 1000)
    btn.click()
    wait_idle(page)


def fill_key(page, name: str, value: str) -> None:
    """Type into a text input / text area / number input and commit it (Streamlit commits on blur/Enter)."""
    box = key(page, name).locator("input, textarea").first
    box.wait_for(state="visible", timeout=20_000)
    box.fill(str(value))
    if box.evaluate("e => e.tagName") == "TEXTAREA":
        box.press("Control+Enter")
    else:
        box.press("Enter")
    wait_idle(page)


def choose_option(page, name: str, option: str, attempts: int = 3) -> None:
    """Pick an option of a selectbox (a react-aria combobox) by its visible text: open it, click the option."""
    box = key(page, name)
    listbox = page.locator('[role="listbox"]')
    for attempt in range(attempts):
        wait_idle(page)
        combo = box.locator('[role="combobox"]').first
        combo.click()
        if not listbox.first.is_visible():
            opener = box.locator('button[aria-label="Open"]')
            if opener.count():
                opener.first.click()
        choice = listbox.locator('[role="option"]').filter(has_text=option).first
        try:
            choice.wait_for(state="visible", timeout=5000)
            choice.click()
            wait_idle(page)
            return
        except Exception:  # noqa: BLE001 - a rerun replaced the widget under the click: try again
            page.keyboard.press("Escape")
            if attempt == attempts - 1:
                raise


def choose_radio(page, name: str, option: str) -> None:
    key(page, name).locator("label").filter(has_text=option).first.click()
    wait_idle(page)


def nav(page, title: str) -> None:
    """Switch page with the sidebar navigation (the same browser session)."""
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first.click()
    wait_idle(page)


def wait_for(page, selector: str, timeout: float = 60.0):
    loc = page.locator(selector).first
    loc.wait_for(state="visible", timeout=timeout * 1000)
    return loc


def body_text(page) -> str:
    return page.evaluate("() => document.body.innerText")


def shot(page, name: str, *, full_page: bool = True, max_height: int = 6000) -> Path:
    """A PNG in tests/screenshots/. Streamlit scrolls inside its main container, not the document, so a
    full-page shot grows the viewport to the content's height for the moment of the shot."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    size = page.viewport_size
    if full_page and size:
        height = page.evaluate("""() => {
            const m = document.querySelector('[data-testid="stMain"]') || document.body;
            return Math.max(m.scrollHeight, window.innerHeight); }""")
        page.set_viewport_size({"width": size["width"], "height": min(int(height) + 20, max_height)})
        page.wait_for_timeout(400)
        try:
            page.screenshot(path=str(path))
        finally:
            page.set_viewport_size(size)
    else:
        page.screenshot(path=str(path))
    return path


DOCS = ROOT / "docs" / "screenshots"


def set_sidebar(page, visible: bool) -> None:
    sidebar = page.locator('[data-testid="stSidebar"]')
    shown = sidebar.count() > 0 and sidebar.first.get_attribute("aria-expanded") != "false" and \
        sidebar.first.bounding_box() is not None and sidebar.first.bounding_box()["width"] > 50
    if shown and not visible:
        sidebar.first.hover()
        page.locator('[data-testid="stSidebarCollapseButton"] button').first.click()
    elif visible and not shown:
        page.locator('[data-testid="stExpandSidebarButton"]').first.click()
    page.wait_for_timeout(600)


def docs_shot(page, name: str, *, scroll_to: str | None = None, width: int = 1100, height: int = 720,
              sidebar: bool = False) -> Path | None:
    """With PGS_DOCS_SCREENSHOTS=1: the README's screenshot `docs/screenshots/<name>.png`, one modest viewport
    (sidebar folded away), quantised to a 256-colour palette (small, committed). Otherwise nothing."""
    if os.environ.get("PGS_DOCS_SCREENSHOTS", "") in ("", "0"):
        return None
    size = page.viewport_size
    page.set_viewport_size({"width": width, "height": height})
    try:
        wait_idle(page)
        if not sidebar:
            set_sidebar(page, False)
        if scroll_to:
            page.locator(scroll_to).first.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)
        DOCS.mkdir(parents=True, exist_ok=True)
        path = DOCS / f"{name}.png"
        page.screenshot(path=str(path))
    finally:
        if not sidebar:
            set_sidebar(page, True)
        if size:
            page.set_viewport_size(size)
            wait_idle(page)
    try:
        from PIL import Image

        with Image.open(path) as im:
            small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            small.save(path, optimize=True)
    except ImportError:
        pass
    return path

"""The HTML report rendered by a real headless Chromium (Debian's /usr/bin/chromium).

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: NUL-separated JSON on
fds 3 and 4), so no Python package and no browser download is needed. Install the browser with
scripts/install_chromium.sh; without it the test is skipped. The screenshot and the page are also copied
to build/test-artifacts/ for review.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT
from test_report import make_out_dir

from sftprep.report import html_report

CHROMIUM = Path(os.environ.get("SFTPREP_CHROMIUM", "/usr/bin/chromium"))  # override for a browser elsewhere
ARTIFACTS = REPO_ROOT / "build" / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]
WIDTH, HEIGHT = 1400, 1000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent: run scripts/install_chromium.sh (needs apt, root)"
)


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, profile: Path, timeout: float = 30.0) -> None:
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        self.timeout = timeout

        def child_fds() -> None:  # fd 3: commands in, fd 4: replies out
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child_fds,
            pass_fds=(3, 4),
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("no reply from Chromium over the DevTools pipe")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the DevTools pipe (exit {self.proc.poll()})")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None, browser: bool = False) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if not browser and self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        for e in self.events:
            if e["method"] == method:
                return e
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._read_message(deadline)
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg

    def open_page(self) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        metrics = {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", metrics)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif e["method"] == "Runtime.exceptionThrown":
                out.append(str(p.get("exceptionDetails", {}).get("text")))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(str(p["entry"].get("text")))
        return out

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", browser=True)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._r)
        os.close(self._w)


PAGE_FACTS = """(() => {
  const bg = el => el ? getComputedStyle(el).backgroundColor : null;
  const box = el => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  return {
    title: document.title,
    trained: [...document.querySelectorAll('.tk i.t')].slice(0, 2).map(bg),
    masked: [...document.querySelectorAll('.tk i.m')].slice(0, 2).map(bg),
    nTrained: document.querySelectorAll('.tk i.t').length,
    nMasked: document.querySelectorAll('.tk i.m').length,
    roles: [...new Set([...document.querySelectorAll('.tk .rs')].map(e => e.dataset.role))].sort(),
    plots: [...document.querySelectorAll('svg.plot')].map(box),
    bars: document.querySelectorAll('svg.plot path').length,
    scripts: document.querySelectorAll('script').length,
    navLinks: document.querySelectorAll('#nav li a').length,
    articles: document.querySelectorAll('article.ex').length,
    hostile: [...document.querySelectorAll('.tk i')].map(e => e.textContent).join('').includes('<script>'),
    height: document.documentElement.scrollHeight,
  };
})()"""

HOVER_TARGET = """(() => {
  const el = document.querySelector('.tk i.t');
  el.scrollIntoView({block: 'center'});
  const r = el.getBoundingClientRect();
  return {x: r.left + r.width / 2, y: r.top + r.height / 2, id: el.dataset.id};
})()"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevTools, dict[str, Any], Path]]:
    tmp = tmp_path_factory.mktemp("browser")
    page = html_report(make_out_dir(tmp), tmp / "report.html", sample=None, indices=None)
    dt = DevTools(tmp / "profile")
    try:
        dt.open_page()
        dt.events.clear()  # a load event of the initial about:blank must not count
        dt.send("Page.navigate", {"url": page.resolve().as_uri()})
        dt.wait_event("Page.loadEventFired")
        facts = dt.evaluate(PAGE_FACTS)
        yield dt, facts, tmp
    finally:
        dt.close()


def test_trained_and_masked_tokens_render_in_different_colours(rendered: Any) -> None:
    _, facts, _ = rendered
    assert facts["nTrained"] > 0 and facts["nMasked"] > 0
    assert all(c and c != "rgba(0, 0, 0, 0)" for c in facts["trained"] + facts["masked"])
    assert not set(facts["trained"]) & set(facts["masked"]), facts
    assert facts["trained"][0] != facts["trained"][1], "adjacent tokens share a shade: boundaries invisible"
    assert {"assistant", "system", "template", "tool", "user"} <= set(facts["roles"])
    assert facts["articles"] == facts["navLinks"] > 0


def test_plots_render_with_size(rendered: Any) -> None:
    _, facts, _ = rendered
    assert len(facts["plots"]) == 2
    assert all(w > 100 and h > 50 for w, h in facts["plots"]), facts["plots"]
    assert facts["bars"] > 10


def test_no_console_errors_no_network_no_injected_script(rendered: Any) -> None:
    dt, facts, _ = rendered
    assert dt.errors() == []
    assert [u for u in dt.requested_urls() if not u.startswith(("file:", "data:", "about:"))] == []
    assert facts["scripts"] == 1
    assert facts["hostile"], "the escaped <script> text should show as text in a token"


def test_hover_shows_token_id_and_label(rendered: Any) -> None:
    dt, _, _ = rendered
    target = dt.evaluate(HOVER_TARGET)
    dt.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": target["x"], "y": target["y"]})
    tip = dt.evaluate("(() => { const t = document.getElementById('tip'); return [t.hidden, t.textContent]; })()")
    assert tip[0] is False
    assert f"token id {target['id']}" in tip[1] and "(trained)" in tip[1]


def test_screenshot(rendered: Any) -> None:
    dt, facts, tmp = rendered
    dt.evaluate("window.scrollTo(0, 0)")
    height = min(int(facts["height"]), 8000)
    clip = {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}
    shot = dt.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True})
    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    (tmp / "report.png").write_bytes(png)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp / "report.png", ARTIFACTS / "report.png")
    shutil.copyfile(tmp / "report.html", ARTIFACTS / "report.html")

"""viewer.html in a real browser: headless Chromium opens it from file://, driven over the DevTools protocol.

Skipped (with the reason) when Chromium is not installed (Debian: ``apt-get install chromium`` or ``make chromium``;
``SS4D_CHROMIUM`` names another binary) or has no WebGL2. The protocol runs over ``--remote-debugging-pipe`` (stdlib
only). The demo's viewer (``outputs/demo/viewer.html`` from ``make demo``, or ``SS4D_DEMO_VIEWER``) is checked too.
"""
from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ss4d.export import export_4d
from ss4d.gaussians import Gaussians

CHROMIUM = os.environ.get("SS4D_CHROMIUM") or next(
    (c for c in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(c)), None)
DEMO_VIEWER = Path(os.environ.get("SS4D_DEMO_VIEWER")
                   or Path(__file__).resolve().parents[1] / "outputs" / "demo" / "viewer.html")  # `make demo`

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (apt-get install chromium, or set "
                                                          "SS4D_CHROMIUM): browser test of viewer.html skipped")


class Browser:
    """Headless Chromium spoken to with the DevTools protocol over a pipe (fd 3 in, fd 4 out, NUL-separated JSON)."""

    def __init__(self, exe: str):
        self.profile = tempfile.mkdtemp(prefix="ss4d-chromium-")
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def fds():  # in the child: the protocol pipes on fds 3 and 4 (via fds >= 10: dup2(3, 3) keeps CLOEXEC)
            r, w = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio", "--hide-scrollbars",
                f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "--window-size=960,720", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=fds, close_fds=False, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._id = b"", 0

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method} in {timeout} s")
            if select.select([self._r], [], [], left)[0]:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium exited")
                self._buf += chunk

    def open(self, url: str) -> Page:
        target = self.call("Target.createTarget", url=url)["targetId"]
        return Page(self, self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"])

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
            self.proc.wait(timeout=20)
        except Exception:  # noqa: BLE001 - make sure the process goes away whatever state it is in
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    def __init__(self, browser: Browser, session: str):
        self.b, self.s = browser, session

    def js(self, expr: str):
        r = self.b.call("Runtime.evaluate", self.s, expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr: str, timeout: float = 90.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if self.js(expr):
                    return
            except RuntimeError:
                pass  # page not ready yet
            time.sleep(0.1)
        raise TimeoutError(f"{expr} not true after {timeout} s; status: {self.status()!r}")

    def status(self) -> str:
        try:
            return self.js("document.getElementById('ss4d-status').textContent") or ""
        except Exception:  # noqa: BLE001
            return "(no page)"

    def show(self, frame: int) -> np.ndarray:
        """Switch to ``frame`` via the URL hash, wait until it is drawn and on screen, return the canvas pixels."""
        self.js(f"location.hash = '#frame={frame}'")
        self.wait(f"window.ss4dApp && ss4dApp.drawnFrame === {frame} && ss4dApp.frameIndex === {frame}")
        return self.canvas_pixels()

    def canvas_pixels(self) -> np.ndarray:
        from PIL import Image

        self.js("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # composited
        rect = self.js("(() => { const r = document.getElementById('ss4d-canvas').getBoundingClientRect();"
                       " return [r.x, r.y, r.width, r.height]; })()")
        shot = self.b.call("Page.captureScreenshot", self.s, format="png",
                           clip={"x": rect[0], "y": rect[1], "width": rect[2], "height": rect[3], "scale": 1})
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB"), dtype=np.int16)

    def key(self, code: str, vk: int):
        """A real (trusted) key press, as the user's keyboard makes it."""
        for kind in ("rawKeyDown", "keyUp"):
            self.b.call("Input.dispatchKeyEvent", self.s, type=kind, key=code, code=code, windowsVirtualKeyCode=vk,
                        nativeVirtualKeyCode=vk)


@pytest.fixture(scope="module")
def browser():
    b = Browser(CHROMIUM)
    try:
        page = b.open("about:blank")
        if not page.js("!!document.createElement('canvas').getContext('webgl2')"):
            pytest.skip("this Chromium has no WebGL2 (not even SwiftShader): browser test of viewer.html skipped")
        yield b
    finally:
        b.close()


def _blob_frames(T: int = 3, n: int = 3000) -> list[Gaussians]:
    """Frame t: a ball of Gaussians moving along x and changing hue (red, green, blue, ...)."""
    out = []
    for t in range(T):
        g = torch.Generator().manual_seed(t)
        d = torch.randn(n, 3, generator=g)
        xyz = d / d.norm(dim=1, keepdim=True) * 0.2 * torch.rand(n, 1, generator=g) ** (1 / 3)
        xyz[:, 0] += -0.25 + 0.25 * t
        rgb = torch.full((n, 3), 0.1)
        rgb[:, t % 3] = 0.9
        f_dc = ((rgb - 0.5) / 0.28209479177387814).reshape(n, 1, 3)
        out.append(Gaussians(xyz + 0.5, f_dc, torch.full((n, 3), 1.5), torch.randn(n, 4, generator=g) * 0.3,
                             torch.full((n, 1), 2.0)))
    return out


def _non_blank(img: np.ndarray) -> float:
    """Fraction of canvas pixels that differ clearly from the white page background."""
    return float((np.abs(img - 255).max(-1) > 40).mean())


@pytest.fixture(scope="module")
def viewer_html(tmp_path_factory):
    out = export_4d(tmp_path_factory.mktemp("viewer") / "asset", _blob_frames(), 6, ply=False, glb=False)
    return out["viewer"]


def test_viewer_from_file_draws_and_changes_between_frames(browser, viewer_html):
    page = browser.open(viewer_html.as_uri() + "#frame=0")
    page.wait("window.ss4dApp && ss4dApp.done")
    assert page.js("ss4dApp.loaded") == 3 and page.js("ss4dApp.errors.filter(Boolean).length") == 0, page.status()
    assert page.status() == ""
    a, b = page.show(0), page.show(1)
    assert _non_blank(a) > 0.01 and _non_blank(b) > 0.01
    assert np.abs(a - b).mean() > 2.0
    # frame 0 is red, frame 1 green: the drawn colours say which frame is on screen
    ink_a, ink_b = a[np.abs(a - 255).max(-1) > 40], b[np.abs(b - 255).max(-1) > 40]
    assert ink_a[:, 0].mean() > ink_a[:, 1].mean() + 40 and ink_b[:, 1].mean() > ink_b[:, 0].mean() + 40


def test_arrow_key_on_focused_slider_steps_one_frame(browser, viewer_html):
    page = browser.open(viewer_html.as_uri() + "#frame=0")
    page.wait("window.ss4dApp && ss4dApp.done && ss4dApp.drawnFrame === 0")
    page.js("document.getElementById('ss4d-slider').focus()")
    assert page.js("document.activeElement.id") == "ss4d-slider"
    page.key("ArrowRight", 39)
    assert page.js("[ss4dApp.frameIndex, document.getElementById('ss4d-slider').value, ss4dApp.playing]") == \
        [1, "1", False]
    page.key("ArrowLeft", 37)
    page.key("ArrowLeft", 37)  # wraps around to the last frame
    assert page.js("[ss4dApp.frameIndex, document.getElementById('ss4d-slider').value]") == [2, "2"]
    page.js("document.body.focus(); document.activeElement.blur()")
    page.key("ArrowRight", 39)
    assert page.js("ss4dApp.frameIndex") == 0


def test_broken_frame_reported_others_play(browser, viewer_html, tmp_path):
    html = viewer_html.read_text()
    bad = re.sub(r'ss4dFrame\(1,"[^"]*"\)', 'ss4dFrame(1,"c3Nz")', html)  # frame 1: 3 bytes of garbage
    assert bad != html
    p = tmp_path / "broken.html"
    p.write_text(bad)
    page = browser.open(p.as_uri() + "#frame=2")
    page.wait("window.ss4dApp && ss4dApp.done")
    assert page.js("[ss4dApp.loaded, !!ss4dApp.errors[1]]") == [2, True]
    assert "frame 2" in page.status() and "the other frames play" in page.status()
    assert _non_blank(page.show(2)) > 0.01 and _non_blank(page.show(0)) > 0.01


def test_partly_written_file_shows_the_frames_it_has(browser, viewer_html, tmp_path):
    """The first frame draws without the rest of the file (as while a big page is still being read)."""
    html = viewer_html.read_text()
    cut = html.index("<script>ss4dFrame(1,")
    p = tmp_path / "partial.html"
    p.write_text(html[:cut])
    page = browser.open(p.as_uri())
    page.wait("window.ss4dApp && ss4dApp.done && ss4dApp.drawnFrame === 0")
    assert page.js("[ss4dApp.loaded, ss4dApp.errors.filter(Boolean).length]") == [1, 2]
    assert "missing" in page.status()
    assert _non_blank(page.canvas_pixels()) > 0.01


def test_picked_ply_files_play(browser, viewer_html, tmp_path):
    """.ply frames chosen in the page's file picker (here y-up ones) replace the embedded frames."""
    from ss4d.export.ply import save_ply

    plys = [save_ply(g, tmp_path / f"f{t}.ply", up="y", sh_degree=3) for t, g in enumerate(_blob_frames(2))]
    page = browser.open(viewer_html.as_uri() + "#frame=0")
    page.wait("window.ss4dApp && ss4dApp.done")
    page.js("document.getElementById('ss4d-up').value = 'y'")
    obj = browser.call("Runtime.evaluate", page.s, expression="document.getElementById('ss4d-files')")["result"]
    browser.call("DOM.setFileInputFiles", page.s, files=[str(p) for p in plys], objectId=obj["objectId"])
    page.wait("ss4dApp.done && ss4dApp.total === 2 && ss4dApp.loaded === 2")
    assert page.status() == ""
    a, b = page.show(0), page.show(1)
    assert _non_blank(a) > 0.01 and np.abs(a - b).mean() > 2.0
    # y-up files shown upright: the same picture as the embedded (z-up) frame 0
    page2 = browser.open(viewer_html.as_uri() + "#frame=0")
    page2.wait("window.ss4dApp && ss4dApp.done")
    ref = page2.show(0)
    assert np.abs(a - ref).mean() < 2.0


@pytest.mark.skipif(not DEMO_VIEWER.is_file(), reason=f"no {DEMO_VIEWER} (run `make demo` first)")
def test_demo_viewer(browser):
    page = browser.open(DEMO_VIEWER.as_uri() + "#frame=0")
    page.wait("window.ss4dApp && ss4dApp.done", timeout=180)
    n = page.js("ss4dApp.total")
    assert n > 1 and page.js("ss4dApp.loaded") == n, page.status()
    a, b = page.show(0), page.show(n // 2)
    assert _non_blank(a) > 0.005 and _non_blank(b) > 0.005
    assert np.abs(a - b).mean() > 0.2

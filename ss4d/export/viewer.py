"""A self-contained HTML viewer that plays per-frame Gaussian PLYs as an animation in the browser.

:func:`write_viewer` writes ``viewer.html`` whose only external references are the PLY files (relative URLs).
The renderer is ss4d's own WebGL2 splat renderer (``ss4d/export/viewer/splat_viewer.js``, inlined): binary PLY
parsing, CPU depth sort per frame/view, instanced quads with the projected 2D covariance, orbit/pan/zoom mouse and
touch controls, play/pause, a frame slider and an fps box. No CDN, no external library.

Browsers refuse ``fetch`` from ``file://`` pages, so either serve the folder (``python -m http.server`` inside
it, then open ``http://localhost:8000/viewer.html``), pick/drop the PLYs into the page when it asks, or write the
viewer with ``embed=True`` to inline the PLY bytes (base64) so it opens straight from disk (fine for small
assets; the file grows by 4/3 of the PLYs' size).
"""
from __future__ import annotations

import base64
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from ss4d.io_utils import atomic_write_text

__all__ = ["VIEWER_ASSETS", "viewer_script", "write_viewer"]

VIEWER_ASSETS = Path(__file__).resolve().parent / "viewer"


def viewer_script() -> str:
    """The JavaScript of the splat viewer (usable on its own: it defines ``window.SS4DViewer``)."""
    return (VIEWER_ASSETS / "splat_viewer.js").read_text(encoding="utf-8")


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _script_safe_json(obj) -> str:
    # "<" -> \u003c keeps "</script>" (and "<!--") out of the inline JSON
    return json.dumps(obj, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_viewer(out_dir, ply_paths: Sequence, fps: float, *, filename: str = "viewer.html",
                 title: str = "ss4d 4D Gaussian viewer", embed: bool = False, up: str = "z", yaw_deg: float = 45.0,
                 pitch_deg: float = 20.0, radius: float = 2.0, fov_deg: float = 40.0, overwrite: bool = True) -> Path:
    """Write ``out_dir/filename`` playing ``ply_paths`` (one PLY per frame, in order) at ``fps`` and return its path.

    PLYs are referenced by URL-quoted paths relative to ``out_dir`` (they must exist). ``embed=True`` also inlines
    their bytes. ``up``: ``"z"`` for ss4d's z-up PLYs (the default of :func:`ss4d.export.ply.save_ply`) or ``"y"``
    for PLYs written with ``transform=Z_UP_TO_Y_UP``. The initial orbit camera is ``yaw_deg``/``pitch_deg``/
    ``radius`` with a vertical field of view of ``fov_deg``."""
    out_dir = Path(out_dir)
    fps = float(fps)
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if up not in ("y", "z"):
        raise ValueError(f"up must be 'y' or 'z', got {up!r}")
    plys = [Path(p) for p in ply_paths]
    if not plys:
        raise ValueError("write_viewer needs at least one PLY")
    missing = [str(p) for p in plys if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"PLY files not found: {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    base = out_dir.resolve()
    urls = [quote(os.path.relpath(p.resolve(), base).replace(os.sep, "/")) for p in plys]
    config = {"frames": urls, "fps": fps, "up": up, "yaw": float(yaw_deg), "pitch": float(pitch_deg),
              "radius": float(radius), "fov": float(fov_deg), "embedded": bool(embed), "generator": "ss4d"}
    embedded = ""
    if embed:
        embedded = "\n".join(f'<script type="application/x-ss4d-ply" data-src="{_html_escape(u)}">'
                             f"{base64.b64encode(p.read_bytes()).decode('ascii')}</script>"
                             for u, p in zip(urls, plys))
    script = viewer_script()
    if re.search(r"</script", script, re.IGNORECASE):
        raise RuntimeError("viewer script must not contain '</script'")
    fps_text = f"{fps:g}"
    subs = {"TITLE": _html_escape(title), "FPS": fps_text, "CONFIG": _script_safe_json(config),
            "EMBEDDED": embedded, "SCRIPT": script}
    template = (VIEWER_ASSETS / "template.html").read_text(encoding="utf-8")
    html = re.sub(r"\{\{([A-Z]+)\}\}", lambda m: subs[m.group(1)], template)  # one pass: no re-substitution
    return atomic_write_text(out_dir / filename, html, overwrite=overwrite)

"""A self-contained HTML viewer that plays 4D Gaussians as an animation in the browser, opened straight from disk.

:func:`write_viewer` writes one ``viewer.html`` with no external references: the renderer is ss4d's own WebGL2
splat renderer (``ss4d/export/viewer/splat_viewer.js``, inlined: CPU depth sort per frame/view, instanced quads with
the projected 2D covariance, orbit/pan/zoom mouse and touch controls, play/pause, a frame slider, an fps box) and
every frame is embedded as a compact binary record (:func:`encode_frame`, base64) in its own
``<script>ss4dFrame(i, "...")</script>``. Browsers run those as the page is parsed, so the first frame draws as
soon as it is read, later frames join playback as they arrive, and a frame that cannot be decoded is reported on
the page while the others still play. No ``fetch``: it works from ``file://`` (double-click).

The record quantizes each Gaussian to 17 bytes (instead of the PLY's 68): positions as uint16 over the frame's
bounding box (steps of box/65535, ~1.4e-5 for the unit cube), rotations as int8 quaternions (~0.5 degree), colour
and opacity as uint8, log-scales as uint8 over the frame's range (~1 % steps for ss4d's ~3-nat range). Gaussians
with opacity below 0.5/255 (invisible after quantization) are left out. The demo (32 frames, ~13k Gaussians each)
gives a viewer of about 10 MB. ``.ply`` files (INRIA 3DGS layout) can also be picked or dropped onto the page.
"""
from __future__ import annotations

import base64
import json
import math
import re
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ss4d.gaussians import Gaussians
from ss4d.io_utils import atomic_write_text

__all__ = ["FRAME_MAGIC", "VIEWER_ASSETS", "encode_frame", "viewer_script", "write_viewer"]

VIEWER_ASSETS = Path(__file__).resolve().parent / "viewer"
FRAME_MAGIC = b"SS4F"
_HEADER = struct.Struct("<4sI3f3f2f")  # magic, count, lo[3], hi[3], log-scale min, max (40 bytes)


def viewer_script() -> str:
    """The JavaScript of the splat viewer (usable on its own: it defines ``window.SS4DViewer``)."""
    return (VIEWER_ASSETS / "splat_viewer.js").read_text(encoding="utf-8")


def encode_frame(gaussians: Gaussians) -> bytes:
    """One frame as the viewer's compact little-endian record: header (``SS4F``, uint32 n, float32 lo[3], hi[3],
    smin, smax), then uint16 positions [n, 3], int8 quaternions (w, x, y, z) [n, 4], uint8 RGBA [n, 4] and
    uint8 log-scales [n, 3] (see the module doc for the quantization)."""
    g = gaussians
    with torch.no_grad():
        xyz = g.get_xyz.detach().cpu().double().numpy().reshape(-1, 3)
        opacity = g.get_opacity.detach().cpu().double().numpy().reshape(-1)
        rgb = g.get_colors.detach().cpu().double().numpy().reshape(-1, 3)
        log_s = torch.log(g.get_scaling.detach().cpu().double()).numpy().reshape(-1, 3)
        rot = g.get_rotation.detach().cpu().double().numpy().reshape(-1, 4)
    keep = opacity >= 0.5 / 255
    xyz, opacity, rgb, log_s, rot = xyz[keep], opacity[keep], rgb[keep], log_s[keep], rot[keep]
    n = len(xyz)
    if not (np.isfinite(xyz).all() and np.isfinite(log_s).all() and np.isfinite(rot).all()):
        raise ValueError("Gaussians with non-finite positions, scales or rotations cannot be shown")
    lo, hi = (xyz.min(0), xyz.max(0)) if n else (np.zeros(3), np.zeros(3))
    lo, hi = lo.astype(np.float32).astype(np.float64), hi.astype(np.float32).astype(np.float64)
    span = np.where(hi > lo, hi - lo, 1.0)
    q_pos = np.rint(np.clip((xyz - lo) / span, 0, 1) * 65535).astype("<u2")
    smin, smax = (float(log_s.min()), float(log_s.max())) if n else (0.0, 0.0)
    smin, smax = float(np.float32(smin)), float(np.float32(smax))
    q_s = np.rint(np.clip((log_s - smin) / (smax - smin if smax > smin else 1.0), 0, 1) * 255).astype(np.uint8)
    rot = rot / np.maximum(np.linalg.norm(rot, axis=1, keepdims=True), 1e-12)
    rot *= np.where(rot[:, :1] < 0, -1.0, 1.0)
    q_rot = np.rint(rot * 127).astype(np.int8)
    rgba = np.rint(np.clip(np.concatenate([rgb, opacity[:, None]], 1), 0, 1) * 255).astype(np.uint8)
    head = _HEADER.pack(FRAME_MAGIC, n, *lo, *hi, smin, smax)
    return head + q_pos.tobytes() + q_rot.tobytes() + rgba.tobytes() + q_s.tobytes()


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _script_safe_json(obj) -> str:
    # "<" -> \u003c keeps "</script>" (and "<!--") out of the inline JSON
    return json.dumps(obj, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_viewer(out_dir, frames: Sequence, fps: float, *, filename: str = "viewer.html",
                 title: str = "ss4d 4D Gaussian viewer", up: str = "z", yaw_deg: float = 45.0, pitch_deg: float = 20.0,
                 radius: float = 2.0, fov_deg: float = 40.0, overwrite: bool = True) -> Path:
    """Write ``out_dir/filename`` playing ``frames`` at ``fps`` (all data embedded) and return its path.

    ``frames``: :class:`Gaussians` (ss4d's z-up world) or INRIA PLY paths written with ``up`` (read with
    :func:`ss4d.export.ply.load_ply`). The initial orbit camera is ``yaw_deg``/``pitch_deg``/``radius`` with a
    vertical field of view of ``fov_deg``."""
    from .ply import load_ply

    out_dir = Path(out_dir)
    fps = float(fps)
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps}")
    frames = list(frames)
    if not frames:
        raise ValueError("write_viewer needs at least one frame")
    missing = [str(f) for f in frames if not isinstance(f, Gaussians) and not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"PLY files not found: {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    config = {"frameCount": len(frames), "fps": fps, "yaw": float(yaw_deg), "pitch": float(pitch_deg),
              "radius": float(radius), "fov": float(fov_deg), "generator": "ss4d"}
    chunks = []
    for t, f in enumerate(frames):
        g = f if isinstance(f, Gaussians) else load_ply(f, up=up)
        chunks.append(f'<script>ss4dFrame({t},"{base64.b64encode(encode_frame(g)).decode("ascii")}");</script>')
    script = viewer_script()
    if re.search(r"</script", script, re.IGNORECASE):
        raise RuntimeError("viewer script must not contain '</script'")
    subs = {"TITLE": _html_escape(title), "FPS": f"{fps:g}", "CONFIG": _script_safe_json(config),
            "SCRIPT": script, "FRAMES": "\n".join(chunks)}
    template = (VIEWER_ASSETS / "template.html").read_text(encoding="utf-8")
    html = re.sub(r"\{\{([A-Z]+)\}\}", lambda m: subs[m.group(1)], template)  # one pass: no re-substitution
    return atomic_write_text(out_dir / filename, html, overwrite=overwrite)

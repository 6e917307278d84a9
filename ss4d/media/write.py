"""Atomic writers of preview videos and GIFs (PyAV / Pillow), the media layer's one place for encoding."""
from __future__ import annotations

import math
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from ss4d.io_utils import atomic_file

from .read import DEFAULT_FPS, _av

__all__ = ["write_gif", "write_video"]


def _as_rgb_frames(frames) -> list[np.ndarray]:
    out = []
    for f in frames:
        a = np.asarray(f)
        if a.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {a.dtype}")
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise ValueError(f"frames must be HxWx3 (or HxWx4) arrays, got shape {a.shape}")
        out.append(np.ascontiguousarray(a[..., :3]))
    if not out:
        raise ValueError("no frames to write")
    h, w = out[0].shape[:2]
    if any(f.shape[:2] != (h, w) for f in out):
        raise ValueError("all frames must have the same size")
    return out


def _atomic_write(path: Path, writer) -> Path:
    """Run ``writer(tmp_path)`` on a temp file next to ``path``, then rename it onto ``path``."""
    with atomic_file(path, overwrite=True, fsync=False) as tmp:
        writer(tmp)
    return path


def _fps_fraction(fps: float) -> Fraction:
    if not (fps and fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def _encode_av(tmp: Path, frames: list[np.ndarray], fps: float, container_fmt: str | None, codec: str, pix_fmt: str,
               options: dict) -> None:
    av = _av()
    h, w = frames[0].shape[:2]
    ph, pw = h + (h % 2), w + (w % 2)
    with av.open(str(tmp), mode="w", format=container_fmt) as out:
        stream = out.add_stream(codec, rate=_fps_fraction(fps), options=options)
        stream.width, stream.height, stream.pix_fmt = pw, ph, pix_fmt
        for f in frames:
            if (ph, pw) != (h, w):
                f = np.pad(f, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
            for pkt in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)


_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


def write_video(path, frames_uint8_rgb, fps: float = DEFAULT_FPS, *, crf: int = 18) -> Path:
    """Write frames (``uint8`` HxWx3; an alpha channel is dropped) as a video and return the path written.

    ``.mp4/.m4v/.mov/.mkv`` (and other extensions FFmpeg knows, e.g. ``.avi``) -> H.264 (libx264, yuv420p, odd
    sizes padded to even by repeating the last row/column), ``.webm`` -> VP9, ``.gif`` -> :func:`write_gif`.
    If video encoding fails for any reason (codec missing, unknown extension, ...), falls back to a GIF next to it
    (same name, ``.gif`` suffix) and returns that path, with a warning.
    Writes are atomic (temp file in the same folder + ``os.replace``).
    """
    path = Path(path)
    frames = _as_rgb_frames(frames_uint8_rgb)
    _fps_fraction(fps)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return write_gif(path, frames, fps)
    fmt = _CONTAINERS.get(suffix)  # None: let FFmpeg pick the container from the extension (.avi, ...)
    if suffix == ".webm":
        codec, opts = "libvpx-vp9", {"crf": str(crf + 12), "b": "0"}
    else:
        codec, opts = "libx264", {"crf": str(crf), "preset": "medium"}
    try:
        return _atomic_write(path, lambda tmp: _encode_av(tmp, frames, fps, fmt, codec, "yuv420p", opts))
    except Exception as e:  # noqa: BLE001 - any encoder problem -> GIF fallback
        gif = path.with_suffix(".gif")
        warnings.warn(f"writing {path} with {codec} failed ({e}); writing {gif} instead", stacklevel=2)
        return write_gif(gif, frames, fps)


def write_gif(path, frames_uint8_rgb, fps: float = DEFAULT_FPS, *, loop: int = 0) -> Path:
    """Write an animated GIF with Pillow (atomic) and return its path.  GIF timing is in 10 ms units, so the
    frame duration is ``round(1000 / fps)`` ms rounded by the viewer to 10 ms."""
    path = Path(path)
    frames = _as_rgb_frames(frames_uint8_rgb)
    duration = max(10, int(round(1000.0 / float(_fps_fraction(fps)))))
    ims = [Image.fromarray(f, "RGB") for f in frames]

    def _w(tmp: Path):
        ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:], duration=duration, loop=loop,
                    disposal=1, optimize=False)

    return _atomic_write(path, _w)

"""Reading input clips into frames (the media layer's one reader).

Inputs accepted by :func:`read_frames`

* a video file (``.mp4 .m4v .mov .mkv .webm .avi ...``) decoded with PyAV.  VP8/VP9 WebM files that carry an
  alpha channel (``alpha_mode=1``) are decoded with libvpx so the alpha survives;
* an animated image (``.gif``, animated ``.webp``, APNG ``.png``) decoded with Pillow;
* a folder of images (``png jpg jpeg webp bmp tif tiff``), sorted *naturally* (``2.png`` before ``10.png``);
  other files in the folder (``.txt``, hidden files, ...) are ignored;
* a list of image paths, used in the given order.

Every error caused by the input itself (missing path, not a video/image, corrupt or truncated file, fewer than two
frames, every frame fully transparent, frames of different sizes) raises :class:`ss4d.errors.InputError` with
a message that names the file.  All-transparent clips are rejected *here* (the earliest place that can tell);
:func:`ss4d.pipeline.preprocess.preprocess_frames` checks again for frames produced by other means.

Frames larger than ``max_side`` on a side are downscaled (aspect kept, LANCZOS) with a single
``warnings.warn`` per clip instead of failing.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from ss4d.errors import InputError

VIDEO_EXTS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".ogv", ".flv",
                        ".wmv", ".3gp"})

__all__ = ["ANIMATED_EXTS", "Clip", "DEFAULT_FPS", "IMAGE_EXTS", "VIDEO_EXTS", "count_frames", "list_images",
           "natural_key", "pil_to_array", "read_frames"]


IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})


ANIMATED_EXTS = frozenset({".gif", ".webp", ".png", ".apng"})


#: frame rate reported for image folders / lists, which carry no timing information
DEFAULT_FPS = 30.0


_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@dataclass
class Clip:
    """Decoded input clip.

    ``frames`` are ``uint8`` arrays, all the same size: ``HxWx4`` RGBA when ``has_alpha`` else ``HxWx3`` RGB.
    ``names`` has one label per frame (file name for image inputs, ``<stem>#<index>`` for videos).
    ``indices`` are the frame numbers in the source (differs from ``range(len(frames))`` when ``read_frames`` was
    given ``indices`` / ``max_frames``).
    """

    frames: list[np.ndarray]
    has_alpha: bool
    fps: float
    source: str
    names: list[str]
    indices: list[int] = field(default_factory=list)

    def __post_init__(self):
        if not self.indices:
            self.indices = list(range(len(self.frames)))

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def height(self) -> int:
        return int(self.frames[0].shape[0])

    @property
    def width(self) -> int:
        return int(self.frames[0].shape[1])


def natural_key(name: str) -> list:
    """Sort key that orders embedded integers numerically: ``2.png < 10.png``, ``f9 < f10``."""
    parts = re.split(r"(\d+)", name)
    return [(0, int(p), p) if p.isdigit() else (1, p.lower(), p) for p in parts]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files in ``folder`` (non-recursive, hidden files skipped), naturally sorted."""
    folder = Path(folder)
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS]
    return sorted(files, key=lambda p: natural_key(p.name))


def _pil_has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def pil_to_array(im: Image.Image) -> np.ndarray:
    """Pillow image -> ``uint8`` HxWx3 (RGB) or HxWx4 (RGBA, when the image has any transparency information)."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        scale = 257.0 if a.max(initial=0) > 255 else 1.0
        g = np.clip(np.rint(a / scale), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if _pil_has_alpha(im):
        return np.asarray(im.convert("RGBA"), dtype=np.uint8).copy()
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _target_size(w: int, h: int, max_side: int) -> tuple[int, int] | None:
    if max(w, h) <= max_side:
        return None
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def _resize_array(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    mode = "RGBA" if a.shape[2] == 4 else "RGB"
    return np.asarray(Image.fromarray(a, mode).resize(size, Image.Resampling.LANCZOS), dtype=np.uint8).copy()


def _load_image(path: Path) -> Image.Image:
    """Open + fully decode one still image, applying its EXIF orientation.  Bad files -> InputError."""
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im) or im
            im.load()
            return im
    except UnidentifiedImageError as e:
        raise InputError(f"{path}: not a readable image file ({e.__class__.__name__})") from e
    except PermissionError as e:
        raise InputError(f"{path}: permission denied") from e
    except _PIL_ERRORS as e:
        raise InputError(f"{path}: corrupt or truncated image ({e})") from e


class _Selector:
    """Decides which decoded frame numbers to keep (``indices`` / ``max_frames`` of :func:`read_frames`)."""

    def __init__(self, indices: Iterable[int] | None, max_frames: int | None):
        self.wanted = None if indices is None else sorted({int(i) for i in indices})
        if self.wanted is not None and any(i < 0 for i in self.wanted):
            raise InputError(f"frame indices must be >= 0, got {self.wanted[:5]}")
        self.wanted_set = set(self.wanted or ())
        if max_frames is not None and max_frames < 1:
            raise InputError(f"max_frames must be >= 1, got {max_frames}")
        self.max_frames = max_frames
        self.kept = 0

    @property
    def everything(self) -> bool:
        return self.wanted is None and self.max_frames is None

    def keep(self, i: int) -> bool:
        if self.max_frames is not None and self.kept >= self.max_frames:
            return False
        ok = self.wanted is None or i in self.wanted_set
        self.kept += ok
        return ok

    def done(self, i: int) -> bool:
        """True when no frame with number > i is needed any more."""
        if self.max_frames is not None and self.kept >= self.max_frames:
            return True
        return self.wanted is not None and (not self.wanted or i >= self.wanted[-1])

    def filter_list(self, n: int) -> list[int]:
        out = [i for i in range(n) if self.wanted is None or i in self.wanted_set]
        return out if self.max_frames is None else out[: self.max_frames]


def _read_image_list(paths: Sequence[Path], source: str, max_side: int, sel: _Selector, warn: list):
    if not paths:
        raise InputError(f"{source}: no images found (supported: {', '.join(sorted(IMAGE_EXTS))})")
    for p in paths:
        if not p.exists():
            raise InputError(f"input image not found: {p}")
        if not p.is_file():
            raise InputError(f"{p}: not a file")
    keep = sel.filter_list(len(paths))
    frames, names = [], []
    ref = None  # (name, w, h) of the first frame
    for i in keep:
        p = paths[i]
        im = _load_image(p)
        if getattr(im, "n_frames", 1) > 1:
            warnings.warn(f"{p}: animated image inside an image sequence, only its first frame is used", stacklevel=3)
        w, h = im.size
        if ref is None:
            ref = (p.name, w, h)
        elif (w, h) != ref[1:]:
            raise InputError(f"frames have different sizes in {source}: {ref[0]} is {ref[1]}x{ref[2]} but {p.name} is "
                             f"{w}x{h}; all frames of a clip must have the same size")
        a = pil_to_array(im)
        tgt = _target_size(w, h, max_side)
        if tgt is not None:
            warn.append((w, h, tgt))
            a = _resize_array(a, tgt)
        frames.append(a)
        names.append(p.name)
    # also verify the sizes of frames that were not decoded (cheap: header only)
    if len(keep) < len(paths) and ref is not None:
        for p in paths:
            try:
                with Image.open(p) as im:
                    size = im.size
                    if im.format in ("JPEG", "MPO", "TIFF", "WEBP") and (im.getexif() or {}).get(0x0112, 1) in (
                            5, 6, 7, 8):
                        size = size[::-1]
            except UnidentifiedImageError as e:
                raise InputError(f"{p}: not a readable image file") from e
            except _PIL_ERRORS as e:
                raise InputError(f"{p}: corrupt or truncated image ({e})") from e
            if size != ref[1:]:
                raise InputError(f"frames have different sizes in {source}: {ref[0]} is {ref[1]}x{ref[2]} but "
                                 f"{p.name} is {size[0]}x{size[1]}; all frames of a clip must have the same size")
    return frames, names, DEFAULT_FPS, keep


def _read_animated(path: Path, max_side: int, sel: _Selector, warn: list):
    """GIF / animated WebP / APNG via Pillow.  Returns None when the file is a single still image."""
    try:
        im = Image.open(path)
    except UnidentifiedImageError as e:
        raise InputError(f"{path}: not a video or image file") from e
    except _PIL_ERRORS as e:
        raise InputError(f"{path}: corrupt or unreadable image ({e})") from e
    with im:
        n = getattr(im, "n_frames", 1)
        if n <= 1:
            return None
        frames, names, durations, kept = [], [], [], []
        try:
            for i, fr in enumerate(ImageSequence.Iterator(im)):
                fr.load()  # WebP sets the frame duration on load
                durations.append(fr.info.get("duration") or 0)
                if sel.keep(i):
                    a = pil_to_array(fr)
                    tgt = _target_size(a.shape[1], a.shape[0], max_side)
                    if tgt is not None:
                        warn.append((a.shape[1], a.shape[0], tgt))
                        a = _resize_array(a, tgt)
                    frames.append(a)
                    names.append(f"{path.stem}#{i}")
                    kept.append(i)
                if sel.done(i):
                    break
        except _PIL_ERRORS as e:
            raise InputError(f"{path}: corrupt or truncated animation, decoding failed after {len(durations)} "
                             f"frame(s) ({e})") from e
    # some frames of a GIF may be RGB and others RGBA (transparency can appear mid-animation)
    if any(f.shape[2] == 4 for f in frames):
        frames = [f if f.shape[2] == 4 else _add_opaque_alpha(f) for f in frames]
    d = [x for x in durations if x and x > 0]
    fps = 1000.0 / float(np.median(d)) if d else DEFAULT_FPS
    return frames, names, fps, kept


def _is_pillow_image(path: Path) -> bool:
    try:
        with Image.open(path):
            return True
    except Exception:  # noqa: BLE001 - anything Pillow cannot identify is tried as a video
        return False


def _av():
    import av  # local import: PyAV is only needed for video files

    return av


def _open_container(path: Path):
    av = _av()
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot open as a video (not a video, or a corrupt/truncated file: "
                         f"{getattr(e, 'strerror', None) or e})") from e


def _frame_rotation(frame) -> int:
    """Counter-clockwise rotation (degrees, multiple of 90) from the frame's display matrix, 0 if none."""
    try:
        r = frame.rotation
    except Exception:  # noqa: BLE001 - older PyAV or no side data
        return 0
    if r is None or (isinstance(r, float) and math.isnan(r)):
        return 0
    return int(round(r / 90.0)) * 90 % 360


def _read_video(path: Path, max_side: int, sel: _Selector, warn: list):
    av = _av()
    container = _open_container(path)
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: contains no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else DEFAULT_FPS
        if not (0 < fps < 1000):
            fps = DEFAULT_FPS
        declared = int(stream.frames or 0)
        codec_name = stream.codec_context.name
        meta = {k.lower(): v for k, v in (stream.metadata or {}).items()}
        want_alpha = False
        ctx = None
        if meta.get("alpha_mode") == "1" and codec_name in ("vp8", "vp9"):
            lib = "libvpx-vp9" if codec_name == "vp9" else "libvpx"
            if lib in av.codecs_available:
                ctx = av.CodecContext.create(lib, "r")
                want_alpha = True
        if ctx is None:
            stream.thread_type = "AUTO"
            fmt = stream.codec_context.format
            want_alpha = bool(fmt is not None and any(c.is_alpha for c in fmt.components))

        def _decoded():
            if ctx is None:
                yield from container.decode(stream)
            else:
                for pkt in container.demux(stream):
                    yield from ctx.decode(pkt if pkt.size else None)

        frames, names, kept = [], [], []
        i = -1
        size = None
        stopped_early = False
        try:
            for frame in _decoded():
                i += 1
                if sel.keep(i):
                    out_fmt = "rgba" if want_alpha else "rgb24"
                    if size is None:
                        size = (frame.width, frame.height)
                    w, h = size
                    tgt = _target_size(w, h, max_side)
                    if tgt is not None:
                        if not warn:
                            warn.append((w, h, tgt))
                        w, h = tgt
                    if (frame.width, frame.height) != (w, h):
                        frame = frame.reformat(width=w, height=h, interpolation="LANCZOS")
                    a = frame.to_ndarray(format=out_fmt)
                    rot = _frame_rotation(frame)
                    if rot:
                        a = np.ascontiguousarray(np.rot90(a, k=rot // 90))
                    frames.append(a)
                    names.append(f"{path.stem}#{i}")
                    kept.append(i)
                if sel.done(i):
                    stopped_early = True
                    break
        except av.FFmpegError as e:
            raise InputError(f"{path}: corrupt or truncated video, decoding failed after {i + 1} frame(s) ({e})") from e
        n_seen = i + 1
        if not stopped_early and declared > 2 and n_seen < declared - max(2, int(0.05 * declared)):
            raise InputError(f"{path}: truncated or corrupt video: the container declares {declared} frames but only "
                             f"{n_seen} could be decoded")
    return frames, names, fps, kept


def _add_opaque_alpha(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=2)


def read_frames(source, max_side: int = 8192, *, indices: Iterable[int] | None = None,
                max_frames: int | None = None) -> Clip:
    """Decode a clip (video / animated image / image folder / list of image paths) into a :class:`Clip`.

    ``indices`` keeps only those frame numbers of the source (decoding still walks the video sequentially but only
    the kept frames are stored, so long videos stay cheap in memory; combine with :func:`count_frames` and
    :func:`select_frames`).  ``max_frames`` stops after that many kept frames.  A clip must yield at least 2 frames
    (1 when the caller asked for a single frame with ``max_frames=1`` / one index).  Frames larger than ``max_side``
    are downscaled with a warning.  RGBA is kept as is; a clip whose alpha is 255 everywhere is returned as RGB
    with ``has_alpha=False``.  Raises :class:`InputError` for any problem with the input.
    """
    if max_side < 1:
        raise InputError(f"max_side must be >= 1, got {max_side}")
    sel = _Selector(indices, max_frames)
    warn: list = []
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        src = str(source)
        if not path.exists():
            raise InputError(f"input not found: {path}")
        suffix = path.suffix.lower()
        if path.is_dir():
            frames, names, fps, kept = _read_image_list(list_images(path), src, max_side, sel, warn)
        elif suffix in VIDEO_EXTS or (suffix not in IMAGE_EXTS | ANIMATED_EXTS and not _is_pillow_image(path)):
            frames, names, fps, kept = _read_video(path, max_side, sel, warn)
        else:
            res = _read_animated(path, max_side, sel, warn)
            if res is None:
                _load_image(path)  # raises InputError when the still image is corrupt
                raise InputError(f"{path}: is a single still image; ss4d needs a video, an animated image or a "
                                 f"folder with at least 2 frames")
            frames, names, fps, kept = res
    else:
        try:
            paths = [Path(p).expanduser() for p in source]
        except TypeError as e:
            raise InputError(f"unsupported input {source!r}: give a video, an image folder or a list of images") from e
        src = f"[{len(paths)} image paths]"
        frames, names, fps, kept = _read_image_list(paths, src, max_side, sel, warn)

    if warn:
        w, h, (tw, th) = warn[0]
        warnings.warn(f"{src}: frames are {w}x{h}, larger than max_side={max_side}; downscaled to {tw}x{th}",
                      stacklevel=2)
    # a clip needs 2 frames, unless the caller itself asked for a single one (max_frames=1 / one index)
    need = 1 if (max_frames == 1 or (sel.wanted is not None and len(sel.wanted) == 1)) else 2
    if len(frames) < need:
        what = "no readable frame" if not frames else "only one readable frame"
        raise InputError(f"{src}: {what}; ss4d needs at least 2 frames")

    has_alpha = False
    if any(f.shape[2] == 4 for f in frames):
        has_alpha = any(f.shape[2] == 4 and int(f[..., 3].min()) < 255 for f in frames)
        if has_alpha:
            frames = [f if f.shape[2] == 4 else _add_opaque_alpha(f) for f in frames]
            if all(not f[..., 3].any() for f in frames):
                raise InputError(f"{src}: every frame is fully transparent (alpha = 0 everywhere); nothing to "
                                 f"reconstruct - check the export of the alpha channel")
        else:
            frames = [np.ascontiguousarray(f[..., :3]) for f in frames]
    return Clip(frames=frames, has_alpha=has_alpha, fps=float(fps), source=src, names=names, indices=list(kept))


def count_frames(source) -> int:
    """Number of frames :func:`read_frames` would return for ``source`` (without keeping them in memory).

    Uses header information when it is reliable (image folders, GIF/WebP frame counts, the container's frame count)
    and falls back to counting demuxed packets for videos whose container does not declare it.
    """
    if not isinstance(source, (str, os.PathLike)):
        return len(list(source))
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        return len(list_images(path))
    if path.suffix.lower() not in VIDEO_EXTS:
        try:
            with Image.open(path) as im:
                return int(getattr(im, "n_frames", 1))
        except UnidentifiedImageError:
            pass
        except _PIL_ERRORS as e:
            raise InputError(f"{path}: corrupt or unreadable image ({e})") from e
    container = _open_container(path)
    av = _av()
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: contains no video stream")
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        try:
            return sum(1 for p in container.demux(stream) if p.size)
        except av.FFmpegError as e:
            raise InputError(f"{path}: corrupt or truncated video ({e})") from e

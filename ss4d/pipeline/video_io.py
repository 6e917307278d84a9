"""Compatibility home of the clip readers / writers and frame selection: they live in :mod:`ss4d.media.read`,
:mod:`ss4d.media.write` and :mod:`ss4d.pipeline.frames`."""
from __future__ import annotations

from ss4d.media.read import (
    ANIMATED_EXTS,
    DEFAULT_FPS,
    IMAGE_EXTS,
    VIDEO_EXTS,
    Clip,
    _load_image,
    count_frames,
    list_images,
    natural_key,
    pil_to_array,
    read_frames,
)
from ss4d.media.write import write_gif, write_video

from .frames import assign_frames_to_windows, select_frames, split_windows

__all__ = [
    "ANIMATED_EXTS",
    "Clip",
    "DEFAULT_FPS",
    "IMAGE_EXTS",
    "VIDEO_EXTS",
    "_load_image",
    "count_frames",
    "list_images",
    "natural_key",
    "pil_to_array",
    "read_frames",
    "select_frames",
    "split_windows",
    "assign_frames_to_windows",
    "write_video",
    "write_gif",
]

"""Batching clips into the SparseTensor batch layout (``b = clip * T + frame``): the one owner of collate for the
dataset samples (:func:`collate`) and for training (:func:`collate_clips`, re-exported as ``ss4d.train.collate``)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ss4d.errors import InputError
from ss4d.render.camera import as_camera

__all__ = ["DataError", "collate", "collate_clips", "frame_major_coords", "normalize_clip"]


class DataError(InputError):
    """The training data set is missing, empty or malformed."""


def frame_major_coords(coords: Sequence[torch.Tensor], T: int) -> torch.Tensor:
    """Concatenate per-clip voxel coords ``[N_i, 4]`` (column 0 = frame) into one int32 batch with column 0 =
    ``clip * T + frame``."""
    out = []
    for i, c in enumerate(coords):
        c = c.int().clone()
        c[:, 0] += i * T
        out.append(c)
    return torch.cat(out)


def collate(batch: Sequence[dict]) -> dict:
    """Batch ``B`` samples of :class:`ClipDataset` (same ``T``, view count and image sizes).

    ``coords`` become ``[sum N, 4]`` = (b, x, y, z) with ``b = sample * T + frame`` (the SparseTensor batch
    layout), ``feats`` ``[sum N, C]``; dense tensors are stacked (``cond_frames [B,T,H,W,4]``, ``occupancy
    [B,T,R,R,R]``, ``views [B,T,V,4,S,S]``, ``frame_indices [B,T]``, ``view_indices [B,T,V]``); camera lists and
    ids become lists of length ``B``; ``batch_size`` = ``B * T`` sparse batch entries, ``num_frames`` = ``T``."""
    if not batch:
        raise ValueError("collate: empty batch")
    T = int(batch[0]["frame_indices"].shape[0])
    for s in batch:
        if int(s["frame_indices"].shape[0]) != T:
            raise ValueError("collate: samples have different numbers of frames")
    out = {"coords": frame_major_coords([s["coords"] for s in batch], T),
           "feats": torch.cat([s["feats"] for s in batch]), "num_frames": T, "batch_size": len(batch) * T,
           "num_samples": len(batch)}
    for key in ("cond_frames", "occupancy", "views", "frame_indices", "view_indices"):
        if key in batch[0]:
            out[key] = torch.stack([s[key] for s in batch])
    for key in ("id", "cameras", "cond_cameras"):
        if key in batch[0]:
            out[key if key != "id" else "ids"] = [s[key] for s in batch]
    return out


def normalize_clip(clip: dict) -> dict:
    """Accept conditioning frames as float `[T, 3, H, W]` (premultiplied) or as channels-last RGB(A) images
    (`[T, H, W, 3|4]`, uint8 or float, straight alpha, e.g. `ss4d.data.ClipDataset`): the latter are converted
    to float in [0, 1], premultiplied on black, channels first; their alpha becomes `cond_alpha [T, H, W]`."""
    x = clip.get("cond_frames")
    if x is None or not isinstance(x, torch.Tensor) or x.dim() != 4:
        return clip
    channels_last = x.shape[-1] in (3, 4) and (x.dtype == torch.uint8 or x.shape[1] not in (3, 4))
    if not channels_last:
        return clip
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    extra = {}
    if x.shape[-1] == 4:
        extra["cond_alpha"] = x[..., 3].contiguous()
        x = x[..., :3] * x[..., 3:]
    return {**clip, "cond_frames": x.permute(0, 3, 1, 2).contiguous(), **extra}


def collate_clips(clips: list[dict]) -> dict:
    """Per-clip dicts -> one batch dict (frame-major, `b = clip * T + frame` in coords)."""
    if not clips:
        raise DataError("collate: no clips")
    clips = [normalize_clip(c) for c in clips]
    T = None
    for c in clips:
        for k in ("cond_frames", "occupancy", "views"):
            if k in c:
                t = c[k].shape[0]
                if T is None:
                    T = t
                elif t != T:
                    raise DataError(f"clips have different frame counts ({T} vs {t} in {k!r})")
    if T is None:
        raise DataError("a clip needs at least one of cond_frames, occupancy or views")
    out: dict = {"num_frames": T, "num_clips": len(clips)}
    keys = set(clips[0])
    for c in clips[1:]:
        if set(c) != keys:
            raise DataError(f"clips have different keys: {sorted(keys)} vs {sorted(c)}")
    for k in ("cond_frames", "cond_alpha", "occupancy", "views", "ss_latents"):
        if k in keys:
            out[k] = torch.cat([c[k] for c in clips])
    if "occupancy" in out:
        out["occupancy"] = out["occupancy"].bool()
    if "coords" in keys:
        for c in clips:
            cc = c["coords"]
            if cc.shape[0] and (int(cc[:, 0].min()) < 0 or int(cc[:, 0].max()) >= T):
                raise DataError(f"clip coords frame index must lie in [0, {T})")
            if cc.shape[0] > 1 and (cc[1:, 0] < cc[:-1, 0]).any():
                raise DataError("clip coords must be sorted by frame")
        out["coords"] = frame_major_coords([c["coords"] for c in clips], T)
        for k in ("feats", "slat"):
            if k in keys:
                out[k] = torch.cat([c[k].float() for c in clips])
    if "cameras" in keys:
        out["cameras"] = [[as_camera(cam) for cam in frame] for c in clips for frame in c["cameras"]]
    if "cond_cameras" in keys:
        out["cond_cameras"] = [as_camera(cam) for c in clips for cam in c["cond_cameras"]]
    return out

"""On-disk 4D clip datasets: a resumable parallel writer for procedural clips and PyTorch clip datasets.

Layout (see ``docs/data.md``)::

    DATASET/
      dataset.json                 writer configuration (checked on resume)
      manifest.jsonl               one JSON row per finished clip (append-only)
      errors.jsonl                 one JSON row per clip that failed to generate (append-only log)
      clips/<id>/
        frames.safetensors         coords int32 [N,4] (frame,x,y,z), feats fp16 [N,C], frame_offsets int64 [T+1],
                                   view_extrinsics [T,V,4,4], view_intrinsics [T,V,3,3],
                                   cond_extrinsics [T,4,4], cond_intrinsics [T,3,3], normalization [4]
        cameras.json               {"views": [[Camera.to_dict()] * V] * T, "cond": [Camera.to_dict()] * T}
        meta.json                  the generator recipe (parts, motions, textures, normalisation, input camera)
        views/f{t:03d}_v{v:03d}.png   RGBA (straight alpha) renders on the Hammersley sphere
        cond/f{t:03d}.png             RGBA monocular input video frames

A clip directory is written under a temporary name and renamed into place when complete; only then is its
manifest row (with the sha256 of every file) appended, so the manifest lists exactly the finished clips.
"""
from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import traceback
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from ss4d.io_utils import append_jsonl, atomic_dir, atomic_file, atomic_write_text, sha256_file
from ss4d.pipeline.preprocess import crop_rgba_frames
from ss4d.render.camera import Camera

from .batching import collate
from .features import get_encoder, voxel_features
from .hammersley import hammersley_cameras
from .procedural import make_clip, render_views

__all__ = [
    "FORMAT",
    "ClipDataset",
    "collate",
    "clip_id",
    "clip_seed",
    "extract_features",
    "read_manifest",
    "verify_clip",
    "verify_dataset",
    "write_procedural_dataset",
    "write_clip",
    "load_clip",
]

log = logging.getLogger(__name__)

FORMAT = "ss4d-clips-v1"
MANIFEST = "manifest.jsonl"
ERRORS = "errors.jsonl"
CONFIG = "dataset.json"
# writer settings that must match when resuming into an existing folder
_CONFIG_KEYS = ("format", "seed", "num_frames", "resolution", "num_views", "view_size", "cond_size", "encoder",
                "num_points", "kinds", "static_prob", "per_frame_views", "orbit_prob")


# ================================================================================================================
# ids, hashing, manifest
# ================================================================================================================
def clip_seed(seed: int, index: int) -> int:
    """Generator seed of clip ``index`` of a dataset with master ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0])


def clip_id(seed: int, index: int) -> str:
    return f"proc{int(seed)}_{int(index):06d}"


def read_manifest(root) -> list[dict]:
    """Rows of ``root/manifest.jsonl`` (a truncated or corrupt line, e.g. from a killed writer, is skipped with a
    warning; a later row for the same id replaces an earlier one)."""
    path = Path(root) / MANIFEST
    rows: dict[str, dict] = {}
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
                rows[row["id"]] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s line %d is not a valid manifest row; ignored", path, n)
    return list(rows.values())


def _append_jsonl(path: Path, row: dict) -> None:
    append_jsonl(path, row)


# ================================================================================================================
# writing one clip
# ================================================================================================================
def _to_u8(rgba: torch.Tensor) -> torch.Tensor:
    return (rgba.clamp(0, 1) * 255).round().to(torch.uint8)


def _save_png(path: Path, chw_u8: torch.Tensor) -> None:
    Image.fromarray(chw_u8.permute(1, 2, 0).contiguous().numpy(), "RGBA").save(path, compress_level=6)


def _stack_cams(cams: Sequence[Camera]) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.stack([c.extrinsics.float() for c in cams]), torch.stack([c.intrinsics.float() for c in cams]))


def write_clip(path, clip, view_cameras, *, view_size: int, cond_size: int, encoder="color",
               batch_views: int = 16, overwrite: bool = False) -> dict:
    """Render, voxelise, extract features and write one clip directory atomically at ``path``.

    ``view_cameras``: ``V`` cameras shared by all frames or ``T`` lists of ``V``. Returns the manifest row
    (without ``source``/``seed``, which the caller adds)."""
    path = Path(path)
    T, R = clip.num_frames, clip.resolution
    per_frame = [list(view_cameras)] * T if isinstance(view_cameras[0], Camera) else [list(v) for v in view_cameras]
    per_frame = [[c.resized(view_size, view_size) for c in cams] for cams in per_frame]
    V = len(per_frame[0])
    if any(len(c) != V for c in per_frame):
        raise ValueError("every frame needs the same number of views")
    enc_name, _ = get_encoder(encoder)
    cond_cams = [c.resized(cond_size, cond_size) for c in clip.input_cameras]
    with atomic_dir(path, overwrite=overwrite) as tmp:
        (tmp / "views").mkdir()
        (tmp / "cond").mkdir()
        coords, feats, offsets, nvox = [], [], [0], []
        for t in range(T):
            rgba = _to_u8(render_views(clip, per_frame, None, frames=[t])[0])  # [V,4,S,S] uint8
            for v in range(V):
                _save_png(tmp / "views" / f"f{t:03d}_v{v:03d}.png", rgba[v])
            cond = _to_u8(render_views(clip, [[c] for c in cond_cams], None, frames=[t])[0, 0])
            _save_png(tmp / "cond" / f"f{t:03d}.png", cond)
            vox = clip.voxels(t)
            f = voxel_features(vox, R, rgba.float() / 255.0, per_frame[t], encoder, batch_views)
            coords.append(torch.cat([torch.full((vox.shape[0], 1), t, dtype=torch.int32), vox.int()], 1))
            feats.append(f.to(torch.float16))
            offsets.append(offsets[-1] + vox.shape[0])
            nvox.append(int(vox.shape[0]))
        ve = torch.stack([_stack_cams(c)[0] for c in per_frame])
        vi = torch.stack([_stack_cams(c)[1] for c in per_frame])
        ce, ci = _stack_cams(cond_cams)
        tensors = {
            "coords": torch.cat(coords).contiguous(),
            "feats": torch.cat(feats).contiguous(),
            "frame_offsets": torch.tensor(offsets, dtype=torch.int64),
            "view_extrinsics": ve.contiguous(), "view_intrinsics": vi.contiguous(),
            "cond_extrinsics": ce.contiguous(), "cond_intrinsics": ci.contiguous(),
            "normalization": torch.tensor(list(clip.center) + [clip.scale], dtype=torch.float32),
        }
        meta = {"format": FORMAT, "resolution": R, "num_frames": T, "num_views": V, "feature": enc_name,
                "feat_dim": int(tensors["feats"].shape[1])}
        # a single metadata entry: safetensors serialises its metadata map in arbitrary order, and the file's
        # bytes (sha256) must be reproducible
        save_file(tensors, str(tmp / "frames.safetensors"), metadata={"ss4d": json.dumps(meta, sort_keys=True)})
        cams_json = {"views": [[c.to_dict() for c in cams] for cams in per_frame],
                     "cond": [c.to_dict() for c in cond_cams]}
        (tmp / "cameras.json").write_text(json.dumps(cams_json), encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps(clip.recipe(), sort_keys=True), encoding="utf-8")
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    flags = (["static"] if clip.static else []) + (["orbit_cond"] if clip.input_camera_params["orbit"] else [])
    return {"id": path.name, "format": FORMAT, "kind": clip.kind, "num_frames": T, "resolution": R,
            "num_views": V, "view_size": int(view_size), "cond_size": int(cond_size), "feature": enc_name,
            "feat_dim": int(tensors["feats"].shape[1]), "num_voxels": nvox, "flags": flags, "files": files}


def _clip_job(job: dict) -> dict:
    """Worker entry point: build and write one clip; never raises (errors are returned as a row)."""
    try:
        cs = job["clip_seed"]
        rng = np.random.default_rng([cs, 7])
        kinds = job.get("kinds")
        kind = str(rng.choice(kinds)) if kinds else None
        static = bool(rng.uniform() < job.get("static_prob", 0.0))
        clip = make_clip(cs, job["num_frames"], job["resolution"], kind=kind, num_points=job.get("num_points"),
                         static=static, orbit_prob=job.get("orbit_prob", 0.3), input_size=job["cond_size"])
        if job.get("per_frame_views"):
            cams = [hammersley_cameras(job["num_views"], width=job["view_size"], rng=np.random.default_rng([cs, 8, t]))
                    for t in range(job["num_frames"])]
        else:
            cams = hammersley_cameras(job["num_views"], width=job["view_size"], rng=np.random.default_rng([cs, 8]))
        row = write_clip(job["path"], clip, cams, view_size=job["view_size"], cond_size=job["cond_size"],
                         encoder=job.get("encoder", "color"), overwrite=True)
        row.update(source="procedural", seed=cs, index=job["index"])
        return row
    except Exception as e:  # noqa: BLE001 - a broken clip must not stop the dataset
        return {"id": job["id"], "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                "seed": job.get("clip_seed"), "index": job.get("index")}


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def _cleanup_temp(clips_dir: Path) -> None:
    for p in clips_dir.glob(".*.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in clips_dir.glob(".*.old-*"):
        shutil.rmtree(p, ignore_errors=True)


def write_procedural_dataset(out, num_clips: int, T: int = 16, R: int = 64, V: int = 24, size: int = 256,
                             seed: int = 0, workers: int = 0, *, cond_size: int | None = None, encoder="color",
                             num_points: int | None = None, kinds: Sequence[str] | None = None,
                             static_prob: float = 0.0, per_frame_views: bool = False, orbit_prob: float = 0.3,
                             verify_existing: bool = False, mp_context: str = "spawn") -> dict:
    """Write (or resume) a procedural dataset of ``num_clips`` clips of ``T`` frames at voxel resolution ``R``
    with ``V`` Hammersley views of ``size`` px per frame (radius 2, fov 40 deg) and a monocular input video of
    ``cond_size`` px (default ``size``).

    Resumable: clips already listed in the manifest are skipped (``verify_existing`` re-checks their sha256 and
    regenerates broken ones); half-written temporary folders are removed; a clip folder present without a
    manifest row is regenerated. ``workers > 0`` uses that many processes (``mp_context``; each runs with one
    torch / OpenMP thread); ``workers=0`` runs in this process. A clip that fails is logged to
    ``errors.jsonl`` and skipped. ``encoder`` must be a registered name for ``workers > 0`` (or a picklable
    callable). Returns a summary ``{"written", "skipped", "failed", "total", "root"}``."""
    root = Path(out)
    clips_dir = root / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    cond_size = int(size if cond_size is None else cond_size)
    enc_name, _ = get_encoder(encoder)
    config = {"format": FORMAT, "seed": int(seed), "num_frames": int(T), "resolution": int(R), "num_views": int(V),
              "view_size": int(size), "cond_size": cond_size, "encoder": enc_name,
              "num_points": None if num_points is None else int(num_points),
              "kinds": None if kinds is None else list(kinds), "static_prob": float(static_prob),
              "per_frame_views": bool(per_frame_views), "orbit_prob": float(orbit_prob)}
    cfg_path = root / CONFIG
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), config[k]) for k in _CONFIG_KEYS if old.get(k) != config[k]}
        if diff:
            raise ValueError(f"{root} was written with other settings {diff}; use another folder")
    else:
        atomic_write_text(cfg_path, json.dumps(config, indent=1, sort_keys=True))
    _cleanup_temp(clips_dir)

    done = {r["id"] for r in read_manifest(root)}
    if verify_existing and done:
        bad = {cid for cid, _ in verify_dataset(root, full=True)}
        done -= bad
    jobs, skipped = [], []
    for i in range(int(num_clips)):
        cid = clip_id(seed, i)
        if cid in done:
            skipped.append(cid)
            continue
        jobs.append({"id": cid, "index": i, "clip_seed": clip_seed(seed, i), "path": str(clips_dir / cid),
                     "num_frames": int(T), "resolution": int(R), "num_views": int(V), "view_size": int(size),
                     "cond_size": cond_size, "encoder": encoder, "num_points": num_points,
                     "kinds": None if kinds is None else list(kinds), "static_prob": float(static_prob),
                     "per_frame_views": bool(per_frame_views), "orbit_prob": float(orbit_prob)})
    written, failed = [], []

    def handle(res: dict) -> None:
        if "error" in res:
            failed.append({"id": res["id"], "error": res["error"]})
            _append_jsonl(root / ERRORS, res)
            log.warning("clip %s failed: %s", res["id"], res["error"])
        else:
            _append_jsonl(root / MANIFEST, res)
            written.append(res["id"])
            log.info("clip %s written (%d/%d)", res["id"], len(written), len(jobs))

    if int(workers) <= 0 or len(jobs) <= 1:
        for job in jobs:
            handle(_clip_job(job))
    else:
        ctx = mp.get_context(mp_context)
        old_env = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the workers before their OpenMP runtime starts
        try:
            with ctx.Pool(min(int(workers), len(jobs)), initializer=_worker_init, maxtasksperchild=16) as pool:
                for res in pool.imap_unordered(_clip_job, jobs):
                    handle(res)
        finally:
            if old_env is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old_env
    summary = {"root": str(root), "total": int(num_clips), "written": written, "skipped": skipped,
               "failed": failed}
    log.info("dataset %s: %d written, %d skipped (already done), %d failed", root, len(written), len(skipped),
             len(failed))
    return summary


def _rewrite_manifest(root: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    atomic_write_text(root / MANIFEST, text, overwrite=True)


def extract_features(root, encoder, name: str | None = None, *, batch_views: int = 16, overwrite: bool = False,
                     dtype=torch.float16, visibility: bool = False) -> dict:
    """Compute another per-voxel feature set for every clip of a dataset from its stored view PNGs (e.g. DINOv2
    with the model loaded once, in this process) and store it as ``clips/<id>/feats_<name>.safetensors``
    (``feats [N, C]`` fp16, rows aligned with ``frames.safetensors``' ``coords``). Each manifest row gains the file's
    sha256 in ``files`` and ``features[name] = C``. Clips that already have the file are skipped unless
    ``overwrite``. Do not run it while a writer appends to the same dataset. ``visibility``: average each voxel
    over the views that see it (:func:`ss4d.data.features.voxel_features`). Returns ``{"written", "skipped",
    "failed"}``."""
    root = Path(root)
    enc_name, _ = get_encoder(encoder)
    name = name or enc_name
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"feature set name {name!r} must be alphanumeric (with - or _)")
    rows = read_manifest(root)
    written, skipped, failed = [], [], []
    for row in rows:
        rel = f"feats_{name}.safetensors"
        d = root / "clips" / row["id"]
        if rel in row.get("files", {}) and (d / rel).exists() and not overwrite:
            skipped.append(row["id"])
            continue
        try:
            t = load_file(str(d / "frames.safetensors"))
            off, coords = t["frame_offsets"], t["coords"]
            S, Vn = int(row["view_size"]), int(row["num_views"])
            out = []
            for f in range(int(row["num_frames"])):
                imgs = torch.stack([torch.from_numpy(_read_png(d / "views" / f"f{f:03d}_v{v:03d}.png"))
                                    .permute(2, 0, 1) for v in range(Vn)])
                cams = _cams(t["view_extrinsics"][f], t["view_intrinsics"][f], S)
                out.append(voxel_features(coords[off[f]:off[f + 1], 1:], int(row["resolution"]), imgs, cams,
                                          encoder, batch_views, dtype, visibility=visibility))
            feats = torch.cat(out).contiguous()
            meta = json.dumps({"feature": name, "feat_dim": int(feats.shape[1])}, sort_keys=True)
            with atomic_file(d / rel, overwrite=True) as tmp:
                save_file({"feats": feats}, str(tmp), metadata={"ss4d": meta})
            row.setdefault("files", {})[rel] = sha256_file(d / rel)
            row.setdefault("features", {})[name] = int(feats.shape[1])
            written.append(row["id"])
        except Exception as e:  # noqa: BLE001
            failed.append({"id": row["id"], "error": f"{type(e).__name__}: {e}"})
            log.warning("features %s for clip %s failed: %s", name, row["id"], e)
    if written:
        _rewrite_manifest(root, rows)
    return {"written": written, "skipped": skipped, "failed": failed, "name": name}


# ================================================================================================================
# verification and loading
# ================================================================================================================
def verify_clip(root, row: dict, full: bool = True) -> str | None:
    """``None`` if the clip is intact, else the reason. Quick mode: every listed file exists and
    ``frames.safetensors`` opens; full mode: additionally every file's sha256 matches the manifest."""
    d = Path(root) / "clips" / row["id"]
    files = row.get("files") or {}
    if "frames.safetensors" not in files:
        return "manifest row lists no frames.safetensors"
    for rel, digest in files.items():
        p = d / rel
        if not p.is_file():
            return f"missing file {rel}"
        if full and sha256_file(p) != digest:
            return f"checksum mismatch for {rel}"
    try:
        with safe_open(str(d / "frames.safetensors"), "pt") as f:
            keys = set(f.keys())
    except Exception as e:  # noqa: BLE001
        return f"unreadable frames.safetensors ({type(e).__name__}: {e})"
    missing = {"coords", "feats", "frame_offsets", "view_extrinsics", "view_intrinsics"} - keys
    if missing:
        return f"frames.safetensors lacks {sorted(missing)}"
    return None


def verify_dataset(root, full: bool = True) -> list[tuple[str, str]]:
    """``[(clip id, reason)]`` for every broken clip of the manifest."""
    bad = []
    for row in read_manifest(root):
        reason = verify_clip(root, row, full)
        if reason:
            bad.append((row["id"], reason))
    return bad


def _cams(E: torch.Tensor, K: torch.Tensor, size: int) -> list[Camera]:
    return [Camera(E[i], K[i], size, size) for i in range(E.shape[0])]


def load_clip(root, clip: str | dict) -> dict:
    """All stored tensors of one clip (``frames.safetensors``) plus its manifest row and camera lists."""
    row = clip if isinstance(clip, dict) else next(r for r in read_manifest(root) if r["id"] == clip)
    d = Path(root) / "clips" / row["id"]
    t = load_file(str(d / "frames.safetensors"))
    t["row"] = row
    t["path"] = d
    return t


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGBA"))


class ClipDataset(Dataset):
    """Windows of ``num_frames`` frames (every ``stride``-th frame) from a clip dataset.

    A sample is a dict:

    * ``cond_frames`` uint8 ``[T, H, W, 4]``: the monocular input video (straight RGBA);
    * ``coords`` int32 ``[N, 4]`` = (frame within the window, x, y, z), sorted; ``feats`` float32 ``[N, C]``;
    * ``occupancy`` bool ``[T, R, R, R]``;
    * ``views`` float32 ``[T, V, 4, S, S]`` straight RGBA in [0, 1] (``V = views_per_frame`` views per frame),
      ``view_indices`` int64 ``[T, V]``, ``cameras``: ``T`` lists of ``V`` :class:`Camera`;
    * ``cond_cameras``: ``T`` cameras of the input video; ``id``; ``frame_indices`` int64 ``[T]``.

    ``windows``: ``"all"`` (every window start is an item, deterministic), ``"random"`` (one item per clip, random
    start) or ``"first"`` (one item per clip starting at frame 0). ``view_selection``: ``"random"`` or
    ``"first"``. Randomness uses ``torch``'s global RNG (seeded per DataLoader worker) unless ``seed`` is given
    (then item ``i`` is reproducible). ``cond_crop``: frame the input video as the pipeline does (one square crop
    around the object's alpha in all frames of the window, see :func:`ss4d.pipeline.preprocess.crop_rgba_frames`;
    ``cond_cameras`` follow the crop). ``verify``: ``"quick"`` (files exist, safetensors opens), ``"full"``
    (sha256 of every file) or ``False``; broken clips are skipped, logged and listed in ``self.skipped``.
    """

    def __init__(self, root, num_frames: int, stride: int = 1, views_per_frame: int = 1, transform=None, *,
                 windows: str = "all", view_selection: str = "random", verify: str | bool = "quick",
                 load_views: bool = True, load_cond: bool = True, seed: int | None = None,
                 feature: str | None = None, cond_crop: bool = False):
        self.root = Path(root)
        self.num_frames = int(num_frames)
        self.stride = int(stride)
        self.views_per_frame = int(views_per_frame)
        self.transform = transform
        if windows not in ("all", "random", "first"):
            raise ValueError(f"windows must be 'all', 'random' or 'first', got {windows!r}")
        if view_selection not in ("random", "first"):
            raise ValueError(f"view_selection must be 'random' or 'first', got {view_selection!r}")
        if self.num_frames < 1 or self.stride < 1 or self.views_per_frame < 0:
            raise ValueError("num_frames and stride must be >= 1, views_per_frame >= 0")
        self.windows, self.view_selection = windows, view_selection
        self.load_views, self.load_cond, self.seed = load_views, load_cond, seed
        self.cond_crop = bool(cond_crop)
        self.feature = feature
        if not (self.root / MANIFEST).exists():
            raise FileNotFoundError(f"{self.root / MANIFEST} not found (not a clip dataset)")
        span = (self.num_frames - 1) * self.stride + 1
        self.clips: list[dict] = []
        self.skipped: list[tuple[str, str]] = []
        for row in sorted(read_manifest(self.root), key=lambda r: r["id"]):
            reason = verify_clip(self.root, row, full=(verify == "full")) if verify else None
            if reason is None and row["num_frames"] < span:
                reason = f"only {row['num_frames']} frames, a window needs {span}"
            if reason is None and feature is not None and f"feats_{feature}.safetensors" not in row.get("files", {}):
                reason = f"no feature set {feature!r} (run extract_features)"
            if reason is None and self.views_per_frame > row["num_views"]:
                reason = f"only {row['num_views']} views per frame, {self.views_per_frame} requested"
            if reason:
                self.skipped.append((row["id"], reason))
                log.warning("skipping clip %s: %s", row["id"], reason)
                continue
            self.clips.append(row)
        self.index: list[tuple[int, int]] = []
        for ci, row in enumerate(self.clips):
            n_start = row["num_frames"] - span + 1
            starts = range(n_start) if windows == "all" else [0 if windows == "first" else -1]
            self.index.extend((ci, s) for s in starts)

    def __len__(self) -> int:
        return len(self.index)

    def _gen(self, i: int):
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(i))

    def __getitem__(self, i: int) -> dict:
        ci, start = self.index[i]
        row = self.clips[ci]
        g = self._gen(i)
        span = (self.num_frames - 1) * self.stride + 1
        if start < 0:
            start = int(torch.randint(row["num_frames"] - span + 1, (1,), generator=g))
        frames = torch.arange(self.num_frames, dtype=torch.int64) * self.stride + start
        d = self.root / "clips" / row["id"]
        try:
            t = load_file(str(d / "frames.safetensors"))
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(f"clip {row['id']}: cannot read frames.safetensors ({e})") from e
        if self.feature is not None:
            try:
                t["feats"] = load_file(str(d / f"feats_{self.feature}.safetensors"))["feats"]
            except Exception as e:  # noqa: BLE001
                raise RuntimeError(f"clip {row['id']}: cannot read feature set {self.feature!r} ({e})") from e
        off = t["frame_offsets"]
        R = int(row["resolution"])
        coords, feats = [], []
        for w, f in enumerate(frames.tolist()):
            a, b = int(off[f]), int(off[f + 1])
            c = t["coords"][a:b].clone()
            c[:, 0] = w
            coords.append(c)
            feats.append(t["feats"][a:b])
        coords = torch.cat(coords).to(torch.int32)
        feats = torch.cat(feats).float()
        occ = torch.zeros(self.num_frames, R, R, R, dtype=torch.bool)
        if coords.shape[0]:
            cl = coords.long()
            occ[cl[:, 0], cl[:, 1], cl[:, 2], cl[:, 3]] = True
        sample = {"id": row["id"], "frame_indices": frames, "coords": coords, "feats": feats, "occupancy": occ}
        Vn, S = int(row["num_views"]), int(row["view_size"])
        k = self.views_per_frame
        if self.view_selection == "first":
            vidx = torch.arange(k).expand(self.num_frames, k).clone()
        else:
            vidx = torch.stack([torch.randperm(Vn, generator=g)[:k] for _ in range(self.num_frames)]) \
                if k else torch.zeros(self.num_frames, 0, dtype=torch.int64)
        sample["view_indices"] = vidx
        VE, VK = t["view_extrinsics"], t["view_intrinsics"]
        sample["cameras"] = [[Camera(VE[f, v], VK[f, v], S, S) for v in vidx[w].tolist()]
                             for w, f in enumerate(frames.tolist())]
        if self.load_views:
            views = torch.zeros(self.num_frames, k, 4, S, S)
            for w, f in enumerate(frames.tolist()):
                for j, v in enumerate(vidx[w].tolist()):
                    views[w, j] = torch.from_numpy(_read_png(d / "views" / f"f{f:03d}_v{v:03d}.png")).permute(
                        2, 0, 1).float() / 255.0
            sample["views"] = views
        C = int(row["cond_size"])
        if "cond_extrinsics" in t:
            sample["cond_cameras"] = [Camera(t["cond_extrinsics"][f], t["cond_intrinsics"][f], C, C)
                                      for f in frames.tolist()]
        if self.load_cond:
            cond = np.stack([_read_png(d / "cond" / f"f{f:03d}.png") for f in frames.tolist()])
            if self.cond_crop and cond[..., 3].any():
                cond, box = crop_rgba_frames(cond, C)
                if "cond_cameras" in sample:
                    sample["cond_cameras"] = [_crop_camera(c, box) for c in sample["cond_cameras"]]
            sample["cond_frames"] = torch.from_numpy(cond)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample


def _crop_camera(cam: Camera, box) -> Camera:
    """The camera of a square pixel crop ``box`` (PIL ``(left, upper, right, lower)``) of its image, same size."""
    left, upper, right, _ = box
    wx, wy = (right - left) / cam.width, (right - left) / cam.height  # crop side as a fraction of the image
    K = cam.intrinsics.clone()
    K[0, 0], K[1, 1] = K[0, 0] / wx, K[1, 1] / wy
    K[0, 2] = (K[0, 2] - left / cam.width) / wx
    K[1, 2] = (K[1, 2] - upper / cam.height) / wy
    return Camera(cam.extrinsics.clone(), K, cam.width, cam.height, cam.near, cam.far)


def concat_clip_datasets(roots, align: str | None = None, align_jitter_deg: float = 0.0, **kwargs):
    """One dataset over several clip-dataset folders (e.g. Blender-rendered assets + procedural clips); keyword
    arguments go to every `ClipDataset`. Used by the default-model training configs (`data.type = "callable"`).
    ``align="input_view"`` turns every sample into the frame of its first input camera (see
    :mod:`ss4d.data.align`), jittered by up to ``align_jitter_deg``."""
    from torch.utils.data import ConcatDataset

    if align not in (None, "object", "input_view"):
        raise ValueError(f"align must be 'object' (the assets' own frame) or 'input_view', got {align!r}")
    if align == "input_view":
        if kwargs.get("transform") is not None:
            raise ValueError("align='input_view' cannot be combined with another transform")
        from .align import AlignToInputView

        kwargs["transform"] = AlignToInputView(jitter_deg=align_jitter_deg)
    return ConcatDataset([ClipDataset(r, **kwargs) for r in roots])

"""Ground truth of the evaluation protocol: settings, cameras, Blender / procedural renders in worker subprocesses
(``python -m ss4d.eval.gt --gt-worker JOB``; a Blender crash costs only that asset) and the cached GT folders."""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

GT_FORMAT = "ss4d-eval-gt-v1"
# per view and frame image metrics of a method (masked_*: inside the union of both alpha masks)
# asset problems that do not change on a re-run (cached in gt/<asset>.not-scored.json); crashes, timeouts and
# unexpected errors are retried
_PERMANENT_CODES = {"no_animation", "no_clip", "no_geometry", "too_many_vertices", "import_failed", "bad_bounds",
                    "degenerate", "bad_geometry", "corrupt", "not_3d", "empty"}
CONFIG_FILE = "evaluation.json"


# ================================================================================================================
# naming
# ================================================================================================================
def view_name(offset_deg: float) -> str:
    """Folder name of the view at ``a0 + offset_deg``: ``v000`` (input), ``v090``, ``v180``, ``v270``."""
    return f"v{int(round(offset_deg)) % 360:03d}"


def frame_file(t: int) -> str:
    return f"{int(t):03d}.png"


def parse_view_name(name: str) -> int | None:
    """Azimuth offset of a view folder name (``v090`` / ``090`` / ``90`` -> 90); None if it is not one."""
    m = re.fullmatch(r"v?(\d{1,3})", name)
    return int(m.group(1)) % 360 if m else None


def _frame_index(stem: str) -> int | None:
    m = re.fullmatch(r"(?:f|frame_?)?(\d+)", stem)
    return int(m.group(1)) if m else None


# ================================================================================================================
# settings
# ================================================================================================================
@dataclass
class GTSettings:
    """How the ground truth is made (recorded in ``evaluation.json``; a report folder holds one setting)."""

    num_frames: int = 32
    size: int = 512
    view_offsets: tuple = (0, 90, 180, 270)
    radius: float = 2.0
    fov_deg: float = 40.0
    elevation_deg: float = 0.0
    resolution: int = 64
    engine: str = "cycles"          # "cycles" | "workbench"
    samples: int = 64               # Cycles samples per pixel
    denoise: bool = False
    seed: int = 0                   # a0 per asset and the Cycles seed
    clip: str | None = None         # clip name / fnmatch pattern (None: the first clip)
    max_vertices: int = 1_000_000
    threads: int = 0                # Blender render threads (0: automatic)

    def __post_init__(self):
        self.view_offsets = tuple(int(round(float(o))) % 360 for o in self.view_offsets)
        if not self.view_offsets or self.view_offsets[0] != 0:
            raise ValueError("the first view offset must be 0 (the input view)")
        if len(set(self.view_offsets)) != len(self.view_offsets):
            raise ValueError(f"duplicate view offsets {self.view_offsets}")
        if self.engine not in ("cycles", "workbench"):
            raise ValueError(f"engine must be 'cycles' or 'workbench', got {self.engine!r}")
        if min(self.num_frames, self.size, self.resolution) < 1:
            raise ValueError("frames, size and resolution must be >= 1")

    @property
    def views(self) -> list[str]:
        return [view_name(o) for o in self.view_offsets]

    def key(self) -> dict:
        """The settings that change the ground truth (``threads`` does not)."""
        d = asdict(self)
        d.pop("threads")
        d["view_offsets"] = list(self.view_offsets)
        d["format"] = GT_FORMAT
        return d


def input_azimuth(asset_id: str, seed: int = 0) -> int:
    """``a0`` in integer degrees ``[0, 360)``, deterministic from the asset id and the seed (varies across assets)."""
    return int(zlib.crc32(f"ss4d-eval:{int(seed)}:{asset_id}".encode()) % 360)


def gt_cameras(a0_deg: float, settings: GTSettings, size: int | None = None) -> list:
    """The protocol cameras (one per view offset) for an asset whose input view is at azimuth ``a0_deg``."""
    from ss4d.render.camera import orbit_camera

    s = int(size or settings.size)
    return [orbit_camera(math.radians(a0_deg + off), math.radians(settings.elevation_deg), settings.radius,
                         math.radians(settings.fov_deg), s, s, near=0.05, far=settings.radius + 2.0)
            for off in settings.view_offsets]


# ================================================================================================================
# images
# ================================================================================================================
def read_rgba(path) -> tuple[np.ndarray, bool]:
    """``(uint8 [H, W, 4], had_alpha)``. RGB / grey images get alpha 255 and ``had_alpha=False``."""
    from PIL import Image

    with Image.open(path) as im:
        had_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        return np.array(im.convert("RGBA")), had_alpha


def write_rgba(path, rgba: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(rgba), "RGBA").save(path, compress_level=6)


def _estimated_alpha(rgb: torch.Tensor, tol: float = 3.0 / 255.0) -> torch.Tensor:
    """Alpha for RGB-on-white renders: 1 where a pixel is not white (any channel below ``1 - tol``)."""
    return ((1.0 - rgb).amax(dim=-3) > tol).to(rgb.dtype)


# ================================================================================================================
# ground truth: the Blender side (runs in the worker process)
# ================================================================================================================
def render_gt_asset(path, folder, settings: GTSettings, a0: int, sha256: str | None = None) -> dict:
    """Render one asset's ground truth into the empty ``folder`` (needs ``bpy``); returns the meta dict.
    Raises :class:`ss4d.data.blender.AssetError` for an unusable asset (``no_animation``, ``no_clip``, ...)."""
    from ss4d.data import blender as B
    from ss4d.data.voxelize import voxelize_mesh

    bpy = B.require_bpy()
    from mathutils import Matrix  # noqa: PLC0415

    t_start = time.perf_counter()
    folder = Path(folder)
    B.reset_scene()
    B.import_asset(path)
    B.check_vertex_budget(B.scene_vertex_count(), settings.max_vertices)
    clips = B.list_clips()
    if not clips or clips[0].static:
        raise B.AssetError("no_animation", f"{Path(path).name}: no animation clip (a static asset cannot be "
                                           "scored by a 4D protocol)")
    names = [c.name for c in clips]
    if settings.clip:
        sel = [c for c in clips if c.name == settings.clip] or \
              [c for c in clips if fnmatch.fnmatchcase(c.name, settings.clip)]
        if not sel:
            raise B.AssetError("no_clip", f"{Path(path).name}: no clip matches {settings.clip!r} (clips: {names})")
        clip = sel[0]
    else:
        clip = clips[0]
    rest = B.RestState()
    root = B._canonical_root()
    rs = B.RenderSettings(num_frames=settings.num_frames, num_views=len(settings.view_offsets), size=settings.size,
                          cond_size=settings.size, input_paths=0, engine=settings.engine, samples=settings.samples,
                          denoise=settings.denoise, threads=settings.threads, seed=settings.seed,
                          max_vertices=settings.max_vertices)
    B.setup_render(rs)
    B.setup_lights()
    cam_obj = B.setup_camera()
    visible = B._render_visible_objects()
    B.activate_clip(clip, rest)
    root.matrix_world = Matrix.Identity(4)
    frames = B.sample_frames(clip.frame_start, clip.frame_end, settings.num_frames)
    center, scale, motion_w = B.measure_clip(clip, frames, visible, settings.max_vertices)
    B._set_normalization(root, center, scale)
    bpy.context.view_layer.update()
    sc = bpy.context.scene
    sc.render.resolution_x = sc.render.resolution_y = int(settings.size)
    cams = gt_cameras(a0, settings)
    views = settings.views
    for v in views:
        (folder / v).mkdir()
    stored = [None] * len(cams)
    voxels, nverts, nvox = {}, [], []
    for t, f in enumerate(frames):
        B.set_frame(float(f))
        verts, faces = B.evaluate_meshes(visible)
        vox = voxelize_mesh(torch.from_numpy(verts), torch.from_numpy(faces), settings.resolution)
        voxels[f"f{t:03d}"] = vox.numpy().astype(np.int32)
        nverts.append(int(verts.shape[0]))
        nvox.append(int(vox.shape[0]))
        for k, cam in enumerate(cams):
            got = B.place_camera(cam_obj, cam, settings.size)
            err = float((got.extrinsics - cam.extrinsics.float()).abs().max())
            if err > 1e-4:
                raise RuntimeError(f"camera placement error {err:.2e}")
            stored[k] = got
            B.render_still(folder / views[k] / frame_file(t))
    np.savez_compressed(folder / "voxels.npz", **voxels)
    motion = float(motion_w * scale) if np.isfinite(motion_w) else float("inf")
    meta = {"format": GT_FORMAT, "asset": str(Path(path).resolve()), "asset_sha256": sha256, "clip": clip.name,
            "clips": names,
            "frame_range": [clip.frame_start, clip.frame_end], "frames": [float(x) for x in frames],
            "center": [float(x) for x in center], "scale": float(scale),
            "normalization": "canonical = (world - center) * scale; union of per-frame world bounds of the clip, "
                             "longest side 1, centred at the origin, z-up",
            "a0_deg": int(a0), "views": views, "view_offsets_deg": list(settings.view_offsets),
            "cameras": {v: c.to_dict() for v, c in zip(views, stored)}, "num_vertices": nverts,
            "num_voxels": nvox, "motion": motion if np.isfinite(motion) else None,
            "flags": (["no_motion"] if motion < 1e-6 else []) + ([] if np.isfinite(motion) else ["topology_changes"]),
            "settings": settings.key(), "render_seconds": time.perf_counter() - t_start}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    return meta


PROCEDURAL_PREFIX = "procedural:"


def parse_procedural_spec(spec: str) -> list[tuple[str, int, int]]:
    """``procedural:SEED:COUNT`` -> ``[(asset_id, seed, index)]`` for clips ``0 .. COUNT-1`` of the procedural
    generator's master seed ``SEED`` (ids ``proc<SEED>_<index>`` as in :mod:`ss4d.data.dataset`; the default
    model trained on master seed 0, so any other seed is a held-out set). Raises ``ValueError`` on a bad spec."""
    from ss4d.data.dataset import clip_id

    body = spec[len(PROCEDURAL_PREFIX):]
    parts = body.split(":")
    try:
        seed, count = int(parts[0]), int(parts[1]) if len(parts) > 1 else 1
    except (ValueError, IndexError):
        raise ValueError(f"{spec!r}: expected procedural:SEED:COUNT, e.g. procedural:1:4") from None
    if len(parts) > 2 or count < 1 or seed < 0:
        raise ValueError(f"{spec!r}: expected procedural:SEED:COUNT with SEED >= 0 and COUNT >= 1")
    return [(clip_id(seed, i), seed, i) for i in range(count)]


def render_gt_procedural(seed: int, index: int, folder, settings: GTSettings, a0: int) -> dict:
    """Ground truth of procedural clip ``index`` of master ``seed`` (:func:`ss4d.data.procedural.make_clip`,
    animated, ``num_frames`` frames): the protocol cameras rendered with the ss4d rasterizer (RGBA, straight alpha,
    like Blender's transparent film) and the surface voxels at ``resolution``, in the asset layout."""
    from ss4d.data.dataset import clip_seed
    from ss4d.data.procedural import make_clip
    from ss4d.render.rasterizer import rasterize

    t_start = time.perf_counter()
    folder = Path(folder)
    clip = make_clip(clip_seed(seed, index), num_frames=settings.num_frames, resolution=settings.resolution)
    cams = gt_cameras(a0, settings)
    views = settings.views
    for v in views:
        (folder / v).mkdir()
    voxels, nvox = {}, []
    for t in range(settings.num_frames):
        g = clip.gaussians(t)
        for k, cam in enumerate(cams):
            with torch.no_grad():
                out = rasterize(g, cam, bg=(0.0, 0.0, 0.0))
            a = out["alpha"][0].clamp(0, 1)
            rgb = (out["color"] / a.clamp_min(1e-6)).clamp(0, 1)
            rgba = torch.cat([rgb, a[None]], 0).permute(1, 2, 0)
            write_rgba(folder / views[k] / frame_file(t), (rgba * 255).round().to(torch.uint8).numpy())
        vox = clip.voxels(t, settings.resolution)
        voxels[f"f{t:03d}"] = vox.numpy().astype(np.int32)
        nvox.append(int(vox.shape[0]))
    np.savez_compressed(folder / "voxels.npz", **voxels)
    meta = {"format": GT_FORMAT, "asset": f"{PROCEDURAL_PREFIX}{seed}:{index}", "asset_sha256": None,
            "clip": clip.kind, "clips": [clip.kind], "frames": list(range(settings.num_frames)),
            "normalization": "procedural canonical box (union of the clip's per-frame bounds, longest side 1)",
            "a0_deg": int(a0), "views": views, "view_offsets_deg": list(settings.view_offsets),
            "cameras": {v: c.to_dict() for v, c in zip(views, cams)}, "num_voxels": nvox,
            "flags": ["procedural"] + (["no_motion"] if clip.static else []),
            "settings": settings.key(), "render_seconds": time.perf_counter() - t_start}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    return meta


def _gt_worker_main(argv=None) -> int:
    from ss4d.workers import worker_main

    return worker_main("ss4d.eval.gt", "--gt-worker", run_gt_job, argv)


def run_gt_job(job: dict) -> int:
    """Render one asset (``job``: asset path, folder, settings, a0, result file); writes ``{"ok": ...}`` or
    ``{"code", "error"}`` to ``job["result"]``. Never raises for a bad asset."""
    from ss4d.data.blender import AssetError, BpyMissingError

    settings = GTSettings(**{**job["settings"], "view_offsets": tuple(job["settings"]["view_offsets"])})
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    res: dict
    try:
        meta = render_gt_asset(job["asset"], job["folder"], settings, int(job["a0"]), job.get("sha256"))
        res = {"ok": True, "seconds": meta["render_seconds"]}
    except AssetError as e:
        res = {"ok": False, "code": e.code, "error": e.message}
    except BpyMissingError as e:
        res = {"ok": False, "code": "no_bpy", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - reported, the run goes on
        res = {"ok": False, "code": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    Path(job["result"]).write_text(json.dumps(res), encoding="utf-8")
    return 0


# ================================================================================================================
# ground truth: the driver
# ================================================================================================================
@dataclass
class GTRecord:
    """One asset of the run: ``ok`` with its ``folder``, or not scored with ``code`` / ``error``."""

    asset_id: str
    path: str
    ok: bool
    folder: Path | None = None
    code: str | None = None
    error: str | None = None
    seconds: float = 0.0
    cached: bool = False


def _check_config(root: Path, settings: GTSettings) -> None:
    from ss4d.errors import InputError
    from ss4d.io_utils import atomic_write_text

    path = root / CONFIG_FILE
    key = settings.key()
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8")).get("ground_truth", {})
        diff = {k: (old.get(k), key.get(k)) for k in key if old.get(k) != key.get(k)}
        if diff:
            raise InputError(f"{root} holds ground truth made with other settings {diff} (old, new): use another "
                             "report folder (or the same settings)")
    else:
        atomic_write_text(path, json.dumps({"ground_truth": key}, indent=1, sort_keys=True))


def _gt_is_complete(folder: Path, settings: GTSettings, sha256: str | None = None) -> bool:
    meta_p = folder / "meta.json"
    if not meta_p.is_file() or not (folder / "voxels.npz").is_file():
        return False
    try:
        meta = json.loads(meta_p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError):
        return False
    if meta.get("settings") != settings.key() or (sha256 is not None and meta.get("asset_sha256") != sha256):
        return False
    return all((folder / v / frame_file(t)).is_file() for v in settings.views for t in range(settings.num_frames))


def _spawn_worker(job: dict, work: Path, timeout: float | None, threads: int) -> str:
    """Run one GT job in a worker subprocess (:func:`ss4d.workers.run_module_worker`); returns '' or a crash
    description naming the worker's log."""
    from ss4d.workers import run_module_worker

    job_path = work / f"{job['id']}.job.json"
    log_path = work / f"{job['id']}.log"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    rc, msg = run_module_worker("ss4d.eval.gt", ["--gt-worker", str(job_path)], log_path, timeout=timeout,
                                threads=threads)
    if rc is None:
        return f"{msg} (log: {log_path})"
    job_path.unlink(missing_ok=True)
    if rc != 0:
        return f"worker exited with status {rc} (log: {log_path})"
    return ""


def prepare_ground_truth(assets: Sequence, root, settings: GTSettings, *, progress: Callable | None = print,
                         in_process: bool = False, timeout: float | None = None) -> list[GTRecord]:
    """Render (or reuse) the ground truth of every asset (files or folders, searched recursively) under
    ``root/gt/``. Returns one :class:`GTRecord` per asset found and per problem (missing path, bad file, no
    animation, Blender failure): bad assets are reported, never raised."""
    from ss4d.data.blender import AssetError, check_asset_file, have_bpy
    from ss4d.data.render_assets import asset_ids, find_assets, sha256_file

    progress = progress or (lambda *a, **k: None)
    root = Path(root)
    gt_root, work = root / "gt", root / ".work"
    gt_root.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    _check_config(root, settings)
    procedural = [str(a) for a in assets if str(a).startswith(PROCEDURAL_PREFIX)]
    files, problems = find_assets([a for a in assets if not str(a).startswith(PROCEDURAL_PREFIX)])
    records = [GTRecord(p["asset_id"], p["asset"], False, code=p["code"], error=p["error"]) for p in problems]
    for spec in procedural:
        try:
            clips = parse_procedural_spec(spec)
        except ValueError as e:
            records.append(GTRecord(spec, spec, False, code="bad_spec", error=str(e)))
            progress(f"gt {spec}: not scored: {e}")
            continue
        for aid, seed, index in clips:
            folder = gt_root / aid
            if _gt_is_complete(folder, settings):
                records.append(GTRecord(aid, f"{PROCEDURAL_PREFIX}{seed}:{index}", True, folder, cached=True))
                continue
            shutil.rmtree(folder, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(dir=gt_root, prefix=f".{aid}.tmp-"))
            a0 = input_azimuth(aid, settings.seed)
            progress(f"gt {aid}: rendering procedural clip, {settings.num_frames} frames x "
                     f"{len(settings.view_offsets)} views ({settings.size}px, a0 = {a0} deg)")
            t0 = time.perf_counter()
            try:
                render_gt_procedural(seed, index, tmp, settings, a0)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            os.rename(tmp, folder)
            records.append(GTRecord(aid, f"{PROCEDURAL_PREFIX}{seed}:{index}", True, folder,
                                    seconds=time.perf_counter() - t0))
            progress(f"gt {aid}: done in {time.perf_counter() - t0:.1f} s")
    hashes = [sha256_file(f) for f in files]
    ids = asset_ids(files, hashes)
    for f, aid, sha in zip(files, ids, hashes):
        folder = gt_root / aid
        if _gt_is_complete(folder, settings, sha):
            records.append(GTRecord(aid, str(f), True, folder, cached=True))
            continue
        fail_p = gt_root / f"{aid}.not-scored.json"
        fail_key = {"sha256": sha, "settings": settings.key()}
        if fail_p.is_file():
            try:
                old = json.loads(fail_p.read_text(encoding="utf-8"))
                if old.get("key") == fail_key:
                    records.append(GTRecord(aid, str(f), False, code=old["code"], error=old["error"], cached=True))
                    continue
            except (json.JSONDecodeError, KeyError, OSError):
                pass
            fail_p.unlink(missing_ok=True)
        try:
            check_asset_file(f)
        except AssetError as e:
            records.append(GTRecord(aid, str(f), False, code=e.code, error=e.message))
            progress(f"gt {aid}: not scored: {e.message}")
            continue
        if not have_bpy():
            from ss4d.data.blender import BPY_MISSING_MESSAGE

            records.append(GTRecord(aid, str(f), False, code="no_bpy", error=BPY_MISSING_MESSAGE))
            continue
        shutil.rmtree(folder, ignore_errors=True)
        for old in gt_root.glob(f".{aid}.tmp-*"):
            shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=gt_root, prefix=f".{aid}.tmp-"))
        a0 = input_azimuth(aid, settings.seed)
        job = {"id": aid, "asset": str(Path(f).resolve()), "sha256": sha, "folder": str(tmp),
               "settings": settings.key() | {"threads": settings.threads}, "a0": a0,
               "result": str(work / f"{aid}.gt-result.json")}
        job["settings"].pop("format", None)
        Path(job["result"]).unlink(missing_ok=True)
        progress(f"gt {aid}: rendering {settings.num_frames} frames x {len(settings.view_offsets)} views "
                 f"({settings.engine}, {settings.size}px, a0 = {a0} deg)")
        t0 = time.perf_counter()
        crash = ""
        if in_process:
            run_gt_job(job)
        else:
            crash = _spawn_worker(job, work, timeout, settings.threads)
        res_p = Path(job["result"])
        res = json.loads(res_p.read_text(encoding="utf-8")) if res_p.is_file() else None
        res_p.unlink(missing_ok=True)
        dt = time.perf_counter() - t0
        if res is not None and res.get("ok"):
            os.rename(tmp, folder)
            records.append(GTRecord(aid, str(f), True, folder, seconds=dt))
            progress(f"gt {aid}: done in {dt:.1f} s")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            if res is None:
                code, err = "crashed", crash or "the Blender worker ended without reporting"
            else:
                code, err = res.get("code", "failed"), res.get("error", "")
            records.append(GTRecord(aid, str(f), False, code=code, error=err, seconds=dt))
            progress(f"gt {aid}: not scored: [{code}] {err}")
            if code in _PERMANENT_CODES:  # the same file with the same settings fails the same way: not retried
                fail_p.write_text(json.dumps({"key": fail_key, "code": code, "error": err}), encoding="utf-8")
    records.sort(key=lambda r: r.asset_id)
    return records


@dataclass
class GroundTruth:
    """One asset's cached ground truth (images are read lazily, one view at a time)."""

    asset_id: str
    folder: Path
    meta: dict
    settings: GTSettings

    @property
    def views(self) -> list[str]:
        return self.settings.views

    @property
    def num_frames(self) -> int:
        return self.settings.num_frames

    @property
    def a0(self) -> float:
        return float(self.meta["a0_deg"])

    def image_path(self, view: str, t: int) -> Path:
        return self.folder / view / frame_file(t)

    def view_rgba(self, view: str) -> torch.Tensor:
        """uint8 ``[T, 4, H, W]``."""
        return torch.stack([torch.from_numpy(read_rgba(self.image_path(view, t))[0]).permute(2, 0, 1)
                            for t in range(self.num_frames)])

    def input_frames(self) -> list[np.ndarray]:
        """The input video as RGBA uint8 ``[H, W, 4]`` frames (what a method receives)."""
        return [read_rgba(self.image_path(self.views[0], t))[0] for t in range(self.num_frames)]

    def voxels(self) -> list[torch.Tensor]:
        with np.load(self.folder / "voxels.npz") as z:
            return [torch.from_numpy(z[f"f{t:03d}"].astype(np.int64)) for t in range(self.num_frames)]

    def camera(self, view: str):
        from ss4d.render.camera import Camera

        return Camera.from_dict(self.meta["cameras"][view])


def load_ground_truth(record: GTRecord, settings: GTSettings) -> GroundTruth:
    meta = json.loads((record.folder / "meta.json").read_text(encoding="utf-8"))
    return GroundTruth(record.asset_id, record.folder, meta, settings)


# ================================================================================================================


if __name__ == "__main__":
    sys.exit(_gt_worker_main())

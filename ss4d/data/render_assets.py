"""Driver of ``ss4d data render``: animated 3D assets -> a clip dataset (the layout of :mod:`ss4d.data.dataset`,
readable by :class:`ss4d.data.dataset.ClipDataset`).

Each asset runs in its own worker subprocess (``python -m ss4d.data.render_assets --worker JOB``), so a crash in
Blender (segfault on a malformed file, out of memory, a timeout) costs only that asset, and every asset starts from
a fresh ``bpy`` state. The worker imports the asset, renders its clips (:func:`ss4d.data.blender.render_asset`)
and finishes each clip here (:func:`finalize_clip`: voxelisation of the exported meshes, per-voxel colour features,
``frames.safetensors``, ``cameras.json``, ``meta.json``), then reports it in a results file; the driver appends
the manifest rows. Layout of one rendered clip (``clips/<asset>__<clip>/``)::

    frames.safetensors     coords int32 [N,4] (frame,x,y,z), feats fp16 [N,4] (view-mean premultiplied RGBA),
                           frame_offsets int64 [T+1], view_extrinsics [T,V,4,4], view_intrinsics [T,V,3,3],
                           cond_extrinsics [T,4,4], cond_intrinsics [T,3,3] (input path 0),
                           cond_paths_extrinsics [K,T,4,4], cond_paths_intrinsics [K,T,3,3] (all K input paths),
                           normalization [4] (center xyz, scale: canonical = (world - center) * scale),
                           frame_times float64 [T] (Blender frame numbers of the samples)
    cameras.json           {"views": [[Camera.to_dict()] * V] * T, "cond": [Camera.to_dict()] * T,
                            "cond_paths": [[Camera.to_dict()] * T] * K}
    meta.json              asset, clip, frame range, fps, sampled frames, normalisation, input-path parameters,
                           render settings, flags
    views/f{t:03d}_v{v:03d}.png   RGBA renders on the Hammersley sphere (radius 2, fov 40 deg)
    cond/f{t:03d}.png             input path 0 (monocular input video); cond_{k}/ for path k >= 1
    meshes/f{t:03d}.npz           the evaluated mesh of frame t in canonical coordinates: vertices float32 [N,3],
                                  faces int32 [F,3], frame (Blender frame number)

Dataset-level files: ``dataset.json`` (settings, checked on resume), ``manifest.jsonl`` (finished clips),
``errors.jsonl`` (skipped assets / failed clips with the reason), ``assets.jsonl`` (clip inventory per asset, used
to skip finished assets without starting Blender), ``logs/<asset>.log`` (the worker's output).

Resumable: clips listed in the manifest are not rendered again; an asset whose selected clips are all done is
not even opened. Bad assets (corrupt, not a 3D file, no geometry, >= ``max_vertices`` vertices, importer or
Blender crash, timeout) are logged and skipped; the run goes on and lists them at the end.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ss4d.io_utils import append_jsonl, sha256_file
from ss4d.workers import run_module_worker, worker_main

from .blender import (
    BPY_MISSING_MESSAGE,
    SUPPORTED_EXTENSIONS,
    AssetError,
    BpyMissingError,
    RenderedClip,
    RenderSettings,
    check_asset_file,
    have_bpy,
    safe_name,
)

__all__ = [
    "FORMAT",
    "render_assets",
    "find_assets",
    "asset_ids",
    "clip_ids_for",
    "finalize_clip",
    "run_asset_job",
    "format_summary",
]

log = logging.getLogger(__name__)

FORMAT = "ss4d-clips-v1"  # same layout as ss4d.data.dataset.FORMAT
MANIFEST, ERRORS, ASSETS, CONFIG = "manifest.jsonl", "errors.jsonl", "assets.jsonl", "dataset.json"
_CONFIG_KEYS = ("format", "source", "seed", "num_frames", "resolution", "num_views", "view_size", "cond_size",
                "input_paths", "engine", "samples", "encoder", "per_frame_views", "radius", "fov_deg")


# ================================================================================================================
# small helpers
# ================================================================================================================
def _append_jsonl(path: Path, row: dict, lock: threading.Lock | None = None) -> None:
    append_jsonl(path, row, lock, default=str)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: ignoring a corrupt line", path)
    return rows


def find_assets(paths: Sequence) -> tuple[list[Path], list[dict]]:
    """Expand files / folders (searched recursively for supported extensions) into a sorted, de-duplicated list.
    Returns ``(files, problems)``; a missing path is a problem row, a file with another extension is kept (the
    worker reports it as "not a 3D file")."""
    files, problems, seen = [], [], set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in SUPPORTED_EXTENSIONS)
            if not found:
                problems.append({"asset": str(p), "asset_id": safe_name(p.name), "code": "no_assets",
                                 "error": f"{p}: no 3D files in this folder"})
        elif p.exists():
            found = [p]
        else:
            problems.append({"asset": str(p), "asset_id": safe_name(p.stem), "code": "missing",
                             "error": f"{p}: no such file or folder"})
            found = []
        for q in found:
            r = q.resolve()
            if r not in seen:
                seen.add(r)
                files.append(q)
    return files, problems


def asset_ids(files: Sequence[Path], hashes: Sequence[str]) -> list[str]:
    """Folder-safe ids from the file stems; stems shared by different files get a content-hash suffix."""
    stems = [safe_name(Path(f).stem) for f in files]
    out = []
    for s, h in zip(stems, hashes):
        out.append(f"{s}-{h[:8]}" if stems.count(s) > 1 else s)
    return out


def clip_ids_for(asset_id: str, names: Sequence[str]) -> list[str]:
    """``<asset>__<clip>`` ids (unique within the asset)."""
    out, used = [], set()
    for n in names:
        base = f"{asset_id}__{safe_name(n)}"
        cid, i = base, 2
        while cid in used:
            cid, i = f"{base}_{i}", i + 1
        used.add(cid)
        out.append(cid)
    return out


def select_clips(names: Sequence[str], patterns: Sequence[str] = (), max_clips: int = 0) -> list[str]:
    """The clip names a run renders (same rule as the worker: fnmatch patterns, then the first ``max_clips``)."""
    sel = [n for n in names if not patterns or any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    return sel[: int(max_clips)] if max_clips and max_clips > 0 else sel


def _place_dir(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` folder onto ``final`` (an old folder there is moved aside, then removed)."""
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
        os.rmdir(old)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)


def _cleanup_temp(clips_dir: Path) -> None:
    for pat in (".*.tmp-*", ".*.old-*"):
        for p in clips_dir.glob(pat):
            shutil.rmtree(p, ignore_errors=True)


# ================================================================================================================
# finishing one clip (runs in the worker, no bpy needed)
# ================================================================================================================
def _finite(x):
    return float(x) if x is not None and np.isfinite(x) else None


def _read_rgba(path: Path):
    import torch  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGBA"))).permute(2, 0, 1).contiguous()


def finalize_clip(rc: RenderedClip, settings: RenderSettings, *, resolution: int, clip_id: str, asset: dict,
                  encoder="color") -> dict:
    """Voxelise the exported meshes, compute per-voxel features from the views and write ``frames.safetensors``,
    ``cameras.json`` and ``meta.json`` into ``rc.folder``. Returns the manifest row (``files`` with sha256)."""
    import torch  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415

    from .features import get_encoder, voxel_features  # noqa: PLC0415
    from .voxelize import voxelize_mesh  # noqa: PLC0415

    folder = Path(rc.folder)
    T, R = len(rc.frames), int(resolution)
    V = len(rc.views[0])
    enc_name, _ = get_encoder(encoder)
    coords, feats, offsets, nvox = [], [], [0], []
    t_vox = t_feat = 0.0
    for t in range(T):
        m = np.load(folder / "meshes" / f"f{t:03d}.npz")
        t0 = time.perf_counter()
        vox = voxelize_mesh(torch.from_numpy(m["vertices"]), torch.from_numpy(m["faces"].astype(np.int64)), R)
        t_vox += time.perf_counter() - t0
        imgs = torch.stack([_read_rgba(folder / "views" / f"f{t:03d}_v{v:03d}.png") for v in range(V)])
        t0 = time.perf_counter()
        f = voxel_features(vox, R, imgs, rc.views[t], encoder)
        t_feat += time.perf_counter() - t0
        coords.append(torch.cat([torch.full((vox.shape[0], 1), t, dtype=torch.int32), vox.int()], 1))
        feats.append(f.to(torch.float16))
        offsets.append(offsets[-1] + int(vox.shape[0]))
        nvox.append(int(vox.shape[0]))
    ve = torch.stack([torch.stack([c.extrinsics.float() for c in cams]) for cams in rc.views])
    vi = torch.stack([torch.stack([c.intrinsics.float() for c in cams]) for cams in rc.views])
    K = len(rc.cond)
    tensors = {
        "coords": torch.cat(coords).contiguous(),
        "feats": torch.cat(feats).contiguous(),
        "frame_offsets": torch.tensor(offsets, dtype=torch.int64),
        "view_extrinsics": ve.contiguous(), "view_intrinsics": vi.contiguous(),
        "normalization": torch.tensor(list(rc.center) + [rc.scale], dtype=torch.float32),
        "frame_times": torch.tensor(rc.frames, dtype=torch.float64),
    }
    if K:
        ce = torch.stack([torch.stack([c.extrinsics.float() for c in path]) for path in rc.cond])
        ci = torch.stack([torch.stack([c.intrinsics.float() for c in path]) for path in rc.cond])
        tensors.update(cond_extrinsics=ce[0].clone(), cond_intrinsics=ci[0].clone(),
                       cond_paths_extrinsics=ce.contiguous(), cond_paths_intrinsics=ci.contiguous())
    meta_st = {"format": FORMAT, "resolution": R, "num_frames": T, "num_views": V, "feature": enc_name,
               "feat_dim": int(tensors["feats"].shape[1]), "source": "blender"}
    # one metadata entry (as ss4d.data.dataset): safetensors writes its metadata map in arbitrary order
    save_file(tensors, str(folder / "frames.safetensors"), metadata={"ss4d": json.dumps(meta_st, sort_keys=True)})
    cams = {"views": [[c.to_dict() for c in cs] for cs in rc.views],
            "cond": [c.to_dict() for c in rc.cond[0]] if K else [],
            "cond_paths": [[c.to_dict() for c in path] for path in rc.cond]}
    (folder / "cameras.json").write_text(json.dumps(cams), encoding="utf-8")
    s = asdict(settings)
    meta = {"source": "blender", "asset": asset["path"], "asset_sha256": asset["sha256"], "asset_id": asset["id"],
            "clip": rc.name, "clip_index": rc.index, "frame_range": list(rc.frame_range), "fps": rc.fps,
            "frames": rc.frames, "center": rc.center, "scale": rc.scale, "bound_radius": rc.bound_radius,
            "normalization": "canonical = (world - center) * scale; union of per-frame world bounds of the clip, "
                             "longest side 1, centred at the origin, z-up",
            "input_paths": rc.cond_params, "num_vertices": rc.num_vertices, "num_faces": rc.num_faces,
            "motion": _finite(rc.motion), "motion_sampled": _finite(rc.motion_sampled), "static": rc.static,
            "flags": rc.flags, "resolution": R,
            "render": {k: s[k] for k in ("engine", "samples", "denoise", "size", "cond_size", "num_views", "radius",
                                         "fov_deg", "per_frame_views", "seed", "view_transform")},
            "timing": {"render_s": rc.render_seconds, "renders": rc.num_renders, "voxelize_s": t_vox,
                       "features_s": t_feat}}
    (folder / "meta.json").write_text(json.dumps(meta, sort_keys=True, default=float), encoding="utf-8")
    files = {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    return {"id": clip_id, "format": FORMAT, "kind": "asset", "source": "blender", "num_frames": T,
            "resolution": R, "num_views": V, "view_size": int(settings.size), "cond_size": int(settings.cond_size),
            "input_paths": K, "feature": enc_name, "feat_dim": int(tensors["feats"].shape[1]), "num_voxels": nvox,
            "flags": list(rc.flags) + (["orbit_cond"] if any(p.get("orbit") for p in rc.cond_params) else []),
            "files": files, "asset": asset["path"], "asset_id": asset["id"],
            "asset_sha256": asset["sha256"], "clip": rc.name, "frame_range": list(rc.frame_range),
            "frames": rc.frames, "engine": settings.engine, "samples": int(settings.samples)}


# ================================================================================================================
# the worker (one asset)
# ================================================================================================================
def run_asset_job(job: dict) -> int:
    """Render one asset as described by ``job`` (see :func:`render_assets`), appending event rows to
    ``job["results"]``. Never raises for a bad asset (the reason is reported); returns 0."""
    import torch  # noqa: PLC0415

    from . import blender  # noqa: PLC0415

    threads = int(job.get("threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    results = Path(job["results"])

    def emit(row: dict) -> None:
        _append_jsonl(results, {**row, "asset_id": job["asset"]["id"]})

    settings = RenderSettings.from_dict(job["settings"])
    clips_dir = Path(job["clips_dir"])
    skip = set(job.get("skip", ()))

    def make_folder(cid: str) -> Path:
        return Path(tempfile.mkdtemp(dir=clips_dir, prefix=f".{cid}.tmp-"))

    def ids_for(names):
        return clip_ids_for(job["asset"]["id"], names)

    try:
        for rc in blender.render_asset(job["asset"]["path"], settings, ids_for, skip, make_folder, emit):
            cid = rc.clip_id
            try:
                row = finalize_clip(rc, settings, resolution=job["resolution"], clip_id=cid, asset=job["asset"],
                                    encoder=job.get("encoder", "color"))
                _place_dir(rc.folder, clips_dir / cid)
                emit({"event": "clip", "row": row})
            except Exception as e:  # noqa: BLE001
                shutil.rmtree(rc.folder, ignore_errors=True)
                emit({"event": "clip_error", "id": cid, "clip": rc.name, "code": "finalize_failed",
                      "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
    except AssetError as e:
        emit({"event": "asset_error", "code": e.code, "error": e.message})
    except BpyMissingError as e:
        emit({"event": "asset_error", "code": "no_bpy", "error": str(e)})
    except Exception as e:  # noqa: BLE001
        emit({"event": "asset_error", "code": "failed", "error": f"{type(e).__name__}: {e}",
              "traceback": traceback.format_exc()})
    emit({"event": "done"})
    return 0


def _worker_main(argv=None) -> int:
    return worker_main("ss4d.data.render_assets", "--worker", run_asset_job, argv)


# ================================================================================================================
# the driver
# ================================================================================================================
def _lock(root: Path):
    """Exclusive lock on the dataset folder (two concurrent runs would interleave their manifests)."""
    f = open(root / ".render.lock", "a+")  # noqa: SIM115
    try:
        import fcntl  # noqa: PLC0415

        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:
        pass
    except OSError:
        f.close()
        raise RuntimeError(f"{root} is being written by another `ss4d data render` run") from None
    return f


def _check_config(root: Path, config: dict) -> None:
    path = root / CONFIG
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), config.get(k)) for k in _CONFIG_KEYS if old.get(k) != config.get(k)}
        if diff:
            raise ValueError(f"{root} was rendered with other settings {diff} (old, new); use another folder")
    else:
        from ss4d.io_utils import atomic_write_text  # noqa: PLC0415

        atomic_write_text(path, json.dumps(config, indent=1, sort_keys=True))


def _salvage(root: Path, work: Path, done: set, lock: threading.Lock) -> int:
    """Clips a previous (killed) driver never entered into the manifest: their worker results are still in
    ``.work/``; enter those whose folders are intact."""
    from .dataset import verify_clip  # noqa: PLC0415

    n = 0
    for res in sorted(work.glob("*.results.jsonl")):
        for ev in _read_jsonl(res):
            row = ev.get("row") if ev.get("event") == "clip" else None
            if row and row["id"] not in done and verify_clip(root, row, full=True) is None:
                _append_jsonl(root / MANIFEST, row, lock)
                done.add(row["id"])
                n += 1
        res.unlink(missing_ok=True)
    return n


def _spawn(job: dict, job_path: Path, log_path: Path, timeout: float | None, python: str) -> tuple[int | None, str]:
    return run_module_worker("ss4d.data.render_assets", ["--worker", job_path], log_path, timeout=timeout,
                             threads=int(job.get("threads") or 0), python=python, banner=True)


def render_assets(assets: Sequence, out, *, num_frames: int = 16, num_views: int = 150, size: int = 512,
                  cond_size: int | None = None, resolution: int = 64, input_paths: int = 1, engine: str = "cycles",
                  samples: int = 128, denoise: bool = False, workers: int = 1, threads: int = 1, seed: int = 0,
                  max_vertices: int = 1_000_000, clips: Sequence[str] = (), max_clips: int = 0,
                  per_frame_views: bool = False, timeout: float | None = None, in_process: bool = False,
                  encoder: str = "color", python: str | None = None, progress=print) -> dict:
    """Render the animation clips of ``assets`` (files or folders) into the clip dataset ``out``.

    Per clip: ``num_frames`` frames uniformly over the clip, per frame ``num_views`` Hammersley views of
    ``size`` px (radius 2, fov 40 deg) and ``input_paths`` monocular input camera paths of ``cond_size`` px
    (default ``size``), the evaluated mesh and its ``resolution``-cubed surface voxels with colour features.
    ``engine``: ``"cycles"`` (``samples`` spp, CPU) or ``"workbench"``. ``workers`` assets render concurrently,
    each in a subprocess with ``threads`` render / torch threads (0: automatic); ``in_process`` renders in this
    process instead (debugging; needs ``bpy`` here). ``timeout`` (s) per asset. ``clips``: fnmatch patterns of
    clip names to render; ``max_clips``: at most this many per asset. Returns the summary dict (see
    :func:`format_summary`)."""
    if not have_bpy():
        raise BpyMissingError(BPY_MISSING_MESSAGE)
    if engine not in ("cycles", "workbench"):
        raise ValueError(f"engine must be 'cycles' or 'workbench', got {engine!r}")
    if min(num_frames, num_views, size, resolution) < 1 or input_paths < 0:
        raise ValueError("frames, views, size and resolution must be >= 1 and input paths >= 0")
    progress = progress or (lambda *a, **k: None)
    root = Path(out)
    clips_dir, work, logs = root / "clips", root / ".work", root / "logs"
    for d in (clips_dir, work, logs):
        d.mkdir(parents=True, exist_ok=True)
    cond_size = int(size if cond_size is None else cond_size)
    settings = RenderSettings(num_frames=int(num_frames), num_views=int(num_views), size=int(size),
                              cond_size=cond_size, input_paths=int(input_paths), engine=engine, samples=int(samples),
                              denoise=bool(denoise), threads=int(threads), seed=int(seed),
                              per_frame_views=bool(per_frame_views), max_vertices=int(max_vertices or 0),
                              clips=tuple(clips), max_clips=int(max_clips))
    config = {"format": FORMAT, "source": "blender", "seed": int(seed), "num_frames": int(num_frames),
              "resolution": int(resolution), "num_views": int(num_views), "view_size": int(size),
              "cond_size": cond_size, "input_paths": int(input_paths), "engine": engine, "samples": int(samples),
              "encoder": encoder, "per_frame_views": bool(per_frame_views), "radius": settings.radius,
              "fov_deg": settings.fov_deg}
    lockf = _lock(root)
    t_start = time.perf_counter()
    try:
        _check_config(root, config)
        _cleanup_temp(clips_dir)
        mlock = threading.Lock()
        from .dataset import read_manifest  # noqa: PLC0415

        done = {r["id"] for r in read_manifest(root)}
        salvaged = _salvage(root, work, done, mlock)
        inventory = {r["sha256"]: r for r in _read_jsonl(root / ASSETS) if "sha256" in r}
        files, problems = find_assets(assets)
        hashes = [sha256_file(f) for f in files]
        ids = asset_ids(files, hashes)
        summary = {"root": str(root), "written": [], "already_done": [], "skipped_assets": [], "failed_clips": [],
                   "salvaged": salvaged, "assets": len(files)}
        for pr in problems:
            _append_jsonl(root / ERRORS, {**pr, "time": time.time()}, mlock)
            summary["skipped_assets"].append(pr)
            progress(f"skip {pr['asset']}: {pr['error']}")

        jobs = []
        for f, h, aid in zip(files, hashes, ids):
            try:  # obviously bad files are reported without starting Blender
                check_asset_file(f)
            except AssetError as e:
                row = {"asset": str(f), "asset_id": aid, "code": e.code, "error": e.message, "time": time.time()}
                _append_jsonl(root / ERRORS, row, mlock)
                summary["skipped_assets"].append(row)
                progress(f"skip {aid}: {e.message}")
                continue
            inv = inventory.get(h)
            if inv is not None:
                id_of = dict(zip(inv["clips"], clip_ids_for(aid, inv["clips"])))
                want = [id_of[n] for n in select_clips(inv["clips"], settings.clips, settings.max_clips)]
                if want and all(c in done for c in want):
                    summary["already_done"].extend(want)
                    progress(f"{aid}: all {len(want)} clip(s) already rendered")
                    continue
            job = {"asset": {"path": str(Path(f).resolve()), "sha256": h, "id": aid}, "settings": asdict(settings),
                   "resolution": int(resolution), "clips_dir": str(clips_dir), "skip": sorted(done),
                   "results": str(work / f"{aid}.results.jsonl"), "threads": int(threads), "encoder": encoder}
            jobs.append(job)

        def run_one(job: dict) -> None:
            aid = job["asset"]["id"]
            res_path = Path(job["results"])
            res_path.unlink(missing_ok=True)
            t0 = time.perf_counter()
            progress(f"{aid}: rendering ({job['asset']['path']})")
            crash = ""
            if in_process:
                run_asset_job(job)
            else:
                job_path = work / f"{aid}.job.json"
                job_path.write_text(json.dumps(job), encoding="utf-8")
                rc, crash = _spawn(job, job_path, logs / f"{aid}.log", timeout, python or sys.executable)
                if rc not in (0, None) and not crash:
                    crash = f"worker exited with status {rc}" + (f" (signal {-rc})" if rc < 0 else "")
                job_path.unlink(missing_ok=True)
            events = _read_jsonl(res_path)
            got_done = any(e.get("event") == "done" for e in events)
            asset_ev = next((e for e in events if e.get("event") == "asset"), None)
            if asset_ev is not None:
                _append_jsonl(root / ASSETS, {"sha256": job["asset"]["sha256"], "id": aid, "path": job["asset"]["path"],
                                              "clips": asset_ev["clips"], "static": asset_ev.get("static", False),
                                              "fps": asset_ev.get("fps")}, mlock)
            n_ok = 0
            for e in events:
                ev = e.get("event")
                if ev == "clip":
                    _append_jsonl(root / MANIFEST, e["row"], mlock)
                    with mlock:
                        done.add(e["row"]["id"])
                        summary["written"].append(e["row"]["id"])
                    n_ok += 1
                elif ev == "clip_error":
                    row = {k: e.get(k) for k in ("id", "clip", "code", "error", "traceback")}
                    row.update(asset=job["asset"]["path"], asset_id=aid, time=time.time())
                    _append_jsonl(root / ERRORS, row, mlock)
                    with mlock:
                        summary["failed_clips"].append(row)
                    progress(f"{aid}: clip {e.get('clip')!r} failed: {e.get('error')}")
                elif ev == "asset_error":
                    row = {"asset": job["asset"]["path"], "asset_id": aid, "code": e.get("code"),
                           "error": e.get("error"), "traceback": e.get("traceback"), "time": time.time()}
                    _append_jsonl(root / ERRORS, row, mlock)
                    with mlock:
                        summary["skipped_assets"].append(row)
                    progress(f"skip {aid}: {e.get('error')}")
            if not got_done:
                why = crash or "worker ended without reporting"
                row = {"asset": job["asset"]["path"], "asset_id": aid, "code": "crashed",
                       "error": f"{why}; {n_ok} clip(s) finished before; see {logs / (aid + '.log')}",
                       "time": time.time()}
                _append_jsonl(root / ERRORS, row, mlock)
                with mlock:
                    summary["skipped_assets"].append(row)
                progress(f"skip {aid}: {row['error']}")
            res_path.unlink(missing_ok=True)
            progress(f"{aid}: {n_ok} clip(s) written in {time.perf_counter() - t0:.1f} s")

        if int(workers) <= 1 or len(jobs) <= 1 or in_process:
            for job in jobs:
                run_one(job)
        else:
            with ThreadPoolExecutor(max_workers=int(workers)) as ex:
                list(ex.map(run_one, jobs))
        summary["seconds"] = time.perf_counter() - t_start
        return summary
    finally:
        lockf.close()


def format_summary(summary: dict) -> str:
    """Human-readable end-of-run report (what was written, what was skipped and why)."""
    lines = [f"ss4d data render: {len(summary['written'])} clip(s) written, {len(summary['already_done'])} already "
             f"done, {len(summary['skipped_assets'])} asset(s) skipped, {len(summary['failed_clips'])} clip(s) failed"
             f" -> {summary['root']} ({summary.get('seconds', 0):.1f} s)"]
    if summary.get("salvaged"):
        lines.append(f"  recovered {summary['salvaged']} finished clip(s) of an interrupted run")
    if summary["skipped_assets"]:
        lines.append("skipped assets:")
        lines += [f"  {Path(r['asset']).name}: [{r.get('code')}] {r.get('error')}" for r in summary["skipped_assets"]]
    if summary["failed_clips"]:
        lines.append("failed clips:")
        lines += [f"  {r.get('id')}: [{r.get('code')}] {r.get('error')}" for r in summary["failed_clips"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_worker_main())

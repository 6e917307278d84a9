"""The report of ``ss4d evaluate``: ``report.json``, ``report.md``, plots and contact sheets (Pillow only).

* ``report.json`` - everything: protocol settings, assets (scored or not, and why), methods, per method x asset the
  per-view / per-frame metrics, means (input view, novel views, all views), flicker, geometry, the pose found,
  what was not scored and why, FVD per clip and pooled, timings. Non-finite numbers are written as the strings
  ``"inf"`` / ``"-inf"`` (a perfect PSNR is ``inf``); ``null`` = not computed.
* ``report.md`` - method x metric tables: the mean over the held-out assets (assets of the model's training
  record are marked and left out unless the run included them), one row per asset, the orientation tables (yaw
  error, fixed-yaw scores), the poses, what was not scored.
* ``plots/bar_<metric>.png`` - grouped bars (assets and the mean; one colour per method);
  ``plots/frames_<asset>.png`` - per-frame novel-view PSNR and voxel IoU per method.
* ``sheets/<asset>/<method>.png`` and ``sheets/<asset>/ground_truth.png`` - contact sheets, one row per view and
  one column per shown frame (``sheet_frames`` evenly spaced frames), composited on white.

:func:`numbers_only` strips timings and cache flags so two runs can be compared (the numbers are deterministic
given the seed).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["write_report", "sanitize", "numbers_only", "markdown_report", "bar_chart", "line_chart",
           "contact_sheet", "METRICS", "ORIENTATION_METRICS", "headline_assets"]

# (key, label, where, higher is better)
METRICS = [
    ("psnr", "PSNR novel", "novel", True),
    ("masked_psnr", "Masked PSNR novel", "novel", True),
    ("ssim", "SSIM novel", "novel", True),
    ("masked_ssim", "Masked SSIM novel", "novel", True),
    ("mask_iou", "Mask IoU novel", "novel", True),
    ("lpips", "LPIPS novel", "novel", False),
    ("clip", "CLIP sim. novel", "novel", True),
    ("psnr", "PSNR input", "input", True),
    ("masked_psnr", "Masked PSNR input", "input", True),
    ("ssim", "SSIM input", "input", True),
    ("masked_ssim", "Masked SSIM input", "input", True),
    ("mask_iou", "Mask IoU input", "input", True),
    ("lpips", "LPIPS input", "input", False),
    ("clip", "CLIP sim. input", "input", True),
    ("mean_voxel_iou", "Voxel IoU", "geometry", True),
    ("mean_tolerant_voxel_iou", "Tolerant voxel IoU", "geometry", True),
    ("mean_chamfer", "Chamfer", "geometry", False),
    ("novel", "Flicker novel", "flicker", None),
    ("input", "Flicker input", "flicker", None),
]
# orientation: the pose search's yaw error and the scores with the yaw pinned to the input camera's (no search)
ORIENTATION_METRICS = [
    ("abs_yaw_error_deg", "Abs. yaw error °", "orientation", False),
    ("psnr", "Fixed-yaw PSNR novel", "fixed_yaw.novel", True),
    ("masked_psnr", "Fixed-yaw masked PSNR novel", "fixed_yaw.novel", True),
    ("ssim", "Fixed-yaw SSIM novel", "fixed_yaw.novel", True),
    ("masked_ssim", "Fixed-yaw masked SSIM novel", "fixed_yaw.novel", True),
    ("mask_iou", "Fixed-yaw mask IoU novel", "fixed_yaw.novel", True),
    ("psnr", "Fixed-yaw PSNR input", "fixed_yaw.input", True),
    ("mean_voxel_iou", "Fixed-yaw voxel IoU", "fixed_yaw.geometry", True),
]
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


# ================================================================================================================
# JSON
# ================================================================================================================
def sanitize(x):
    """JSON-ready copy: tensors / arrays to lists, non-finite floats to "inf" / "-inf" / None, Paths to str."""
    import torch

    if isinstance(x, dict):
        return {str(k): sanitize(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [sanitize(v) for v in x]
    if isinstance(x, torch.Tensor):
        return sanitize(x.tolist())
    if isinstance(x, np.ndarray):
        return sanitize(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, Path):
        return str(x)
    return x


_VOLATILE = {"timing", "seconds", "gt_seconds", "gt_cached", "cached", "generated_cached", "render_seconds",
             "total_s", "score_s"}


def numbers_only(report: dict) -> dict:
    """The report without timings / cache flags / paths (what a re-run must reproduce)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in _VOLATILE and k not in ("path", "folder")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(sanitize(report))


def _num(x):
    """A report value as a float (``"inf"`` -> inf) or None."""
    if x is None:
        return None
    if isinstance(x, str):
        return float(x) if x in ("inf", "-inf") else None
    return float(x)


def _metric(entry: dict, key: str, where: str):
    if entry.get("status") not in ("ok", "partial"):
        return None
    block = entry
    for part in where.split("."):
        block = block.get(part) if isinstance(block, dict) else None
    if not isinstance(block, dict):
        return None
    return _num(block.get(key))


def headline_assets(report: dict) -> list[str]:
    """The scored assets of the headline mean: all of them, less those the model's training record lists as trained
    or tuned on (unless the run included them)."""
    scored = [a["id"] for a in report["assets"] if a["scored"]]
    h = report.get("headline")
    return [a for a in scored if a in h["assets"]] if h else scored


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def _mean(vals):
    v = [x for x in vals if x is not None]
    return float(np.mean(v)) if v else None


# ================================================================================================================
# Markdown
# ================================================================================================================
def markdown_report(report: dict) -> str:
    res = report["results"]
    methods = list(res)
    assets = [a["id"] for a in report["assets"] if a["scored"]]
    nets = report.get("network_metrics", {})
    proto = report["protocol"]
    shown = []
    for key, label, where, hib in METRICS:
        if key in ("lpips", "clip") and nets.get(key) != "computed":
            continue
        shown.append((key, label, where, hib))
    lines = ["# ss4d evaluation report", ""]
    lines.append(f"Protocol: {proto['num_frames']} frames, views {', '.join(_view_labels(proto))}, "
                 f"{proto['size']}² px, radius {proto['radius']}, fov {proto['fov_deg']}°, elevation "
                 f"{proto['elevation_deg']}°, voxels {proto['resolution']}³, engine {proto['engine']}"
                 + (f" ({proto['samples']} spp)" if proto["engine"] == "cycles" else "")
                 + f", seed {proto['seed']}.")
    lines.append("")
    for k, label in (("lpips", "LPIPS"), ("clip", "CLIP similarity"), ("fvd", "FVD")):
        st = nets.get(k)
        if st != "computed":
            lines.append(f"- {label}: not computed ({st})")
    lines.append("- ↑ higher is better, ↓ lower is better; flicker: 0 = as smooth as the truth, > 0 flickers, "
                 "< 0 smoother (e.g. frozen). `inf` PSNR = identical images. – = not computed.")
    lines.append("")
    head_assets = headline_assets(report)
    h = report.get("headline") or {}
    marked = h.get("marked", {})
    lines += ["## Mean over assets", ""]
    if h.get("excluded"):
        lines.append("Not in the mean (the model's training record " + f"`{report.get('training_record')}`): "
                     + ", ".join(f"{a} ({r})" for a, r in sorted(h["excluded"].items()))
                     + ". Pass `--include-training-assets` to include them.")
        lines.append("")
    elif marked:
        lines.append("**The mean includes assets the model was trained or tuned on** ("
                     + ", ".join(f"{a} ({r})" for a, r in sorted(marked.items())) + "): it flatters the model.")
        lines.append("")
    if not head_assets:
        lines += ["No held-out asset was scored: no mean is reported.", ""]

    def mean_table(cols, extra_fvd):
        head = ["Method", "Assets"] + [_label(lbl, hib) for _, lbl, _, hib in cols] + (["FVD pooled ↓"] if extra_fvd
                                                                                       else [])
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in methods:
            sc = [a for a in head_assets if res[m].get(a, {}).get("status") in ("ok", "partial")]
            row = [m, f"{len(sc)}/{len(head_assets)}"]
            for key, _, where, _ in cols:
                row.append(_fmt(_mean([_metric(res[m][a], key, where) for a in sc])))
            if extra_fvd:
                row.append(_fvd_cell(report, m, None))
            out.append("| " + " | ".join(row) + " |")
        return out

    def asset_table(cols, extra):
        head = ["Asset", "Method"] + [_label(lbl, hib) for _, lbl, _, hib in cols] + (
            ["FVD per clip ↓", "Status"] if extra else [])
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for a in assets:
            label = a + (f" ({marked[a]})" if a in marked else "")
            for m in methods:
                e = res[m].get(a, {})
                row = [label, m] + [_fmt(_metric(e, key, where)) for key, _, where, _ in cols]
                if extra:
                    row += [_fvd_cell(report, m, a), e.get("status", "–")]
                out.append("| " + " | ".join(row) + " |")
        return out

    if head_assets:
        lines += mean_table(shown, True)
        lines += ["", "### Orientation (mean over the same assets)", "",
                  "Yaw error: the pose search's azimuth minus the input camera's yaw in the model's output frame "
                  "(0 = the model faced the object as the video shows it, 180 = backwards). Fixed-yaw scores: the "
                  "azimuth pinned to the input camera's yaw (elevation and distance searched), so a prediction facing "
                  "the wrong way cannot score well. No network metrics at the fixed yaw.", ""]
        lines += mean_table(ORIENTATION_METRICS, False)
    lines += ["", "## Per asset", "", "(trained) / (tuned): the model's training record lists the asset.", ""]
    lines += asset_table(shown, True)
    lines += ["", "### Orientation per asset", ""] + asset_table(ORIENTATION_METRICS, False)
    # poses
    pose_rows = []
    for a in assets:
        for m in methods:
            e = res[m].get(a, {})
            p = e.get("pose")
            if p:
                o = e.get("orientation") or {}
                f = e.get("fixed_yaw_pose") or {}
                pose_rows.append(f"| {a} | {m} | {_fmt(p.get('azimuth_deg'), 1)} | {_fmt(p.get('elevation_deg'), 1)} "
                                 f"| {_fmt(p.get('distance'))} | {_fmt(p.get('iou'))} | "
                                 f"{_fmt(o.get('input_view_yaw_deg'), 0)} | {_fmt(o.get('yaw_error_deg'), 1)} | "
                                 f"{_fmt(f.get('elevation_deg'), 1)} | {_fmt(f.get('distance'))} | "
                                 f"{_fmt(f.get('iou'))} | {_fmt(p.get('gt_input_azimuth_deg'), 0)} |")
    if pose_rows:
        lines += ["", "## Alignment (pose of the input camera in the prediction's frame)", "",
                  "| Asset | Method | Azimuth ° | Elevation ° | Distance | Proxy mask IoU | Input yaw ° | Yaw error ° "
                  "| Fixed-yaw elevation ° | Fixed-yaw distance | Fixed-yaw proxy IoU | GT a0 ° |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"] + pose_rows
    # not scored
    ns = []
    for a in report["assets"]:
        if not a["scored"]:
            ns.append(f"- asset `{a['id']}`: not scored: [{a['code']}] {a['error']}")
    for m in methods:
        for a, e in res[m].items():
            if e.get("status") == "failed":
                ns.append(f"- `{m}` / `{a}`: not scored: [{e.get('code')}] {e.get('error')}")
            for p in e.get("not_scored", []) or []:
                fr = p.get("frame")
                frs = "" if fr is None else f" frames {_ranges(fr)}"
                view = f" view {p['view']}" if p.get("view") else ""
                ns.append(f"- `{m}` / `{a}`:{view}{frs}: [{p['code']}] {p['error']}")
            if e.get("geometry", {}).get("reason"):
                ns.append(f"- `{m}` / `{a}`: geometry not scored: {e['geometry']['reason']}")
            for n in e.get("notes", []) or []:
                ns.append(f"- `{m}` / `{a}`: note: {n}")
    if ns:
        lines += ["", "## Not scored / notes", ""] + ns
    lines += ["", "Plots: `plots/`; contact sheets (views × frames): `sheets/<asset>/`.", ""]
    return "\n".join(lines)


def _view_labels(proto) -> list[str]:
    offs = proto["view_offsets"]
    return [("a0 (input)" if o == 0 else f"a0+{o}°") for o in offs]


def _label(lbl: str, hib) -> str:
    return lbl + (" ↑" if hib is True else " ↓" if hib is False else "")


def _fvd_cell(report, method, asset) -> str:
    f = report.get("fvd", {}).get(method)
    if not f:
        return "–"
    if asset is None:
        p = f["pooled"]
        return _fmt(_num(p["value"]), 2) if p.get("computed") else "–"
    p = f["per_clip"]
    if not p.get("computed"):
        return "–"
    return _fmt(_num(p["value"].get(asset)), 2) if asset in p["value"] else "–"


def _ranges(frames) -> str:
    if isinstance(frames, int):
        return str(frames)
    frames = sorted(frames)
    out, i = [], 0
    while i < len(frames):
        j = i
        while j + 1 < len(frames) and frames[j + 1] == frames[j] + 1:
            j += 1
        out.append(str(frames[i]) if i == j else f"{frames[i]}-{frames[j]}")
        i = j + 1
    return ",".join(out)


# ================================================================================================================
# plots (Pillow)
# ================================================================================================================
def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _text_w(draw, text, font) -> int:
    try:
        b = draw.textbbox((0, 0), text, font=font)
        return b[2] - b[0]
    except AttributeError:
        return 6 * len(text)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _axes(values, include_zero: bool):
    fin = [v for v in values if v is not None and math.isfinite(v)]
    if not fin:
        return 0.0, 1.0
    lo, hi = min(fin), max(fin)
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    return (lo if include_zero and lo == 0 else lo - pad), hi + pad


def _frame(draw, W, H, box, lo, hi, font, title, ylabel):
    x0, y0, x1, y1 = box
    draw.text((x0, 6), title, fill=(0, 0, 0), font=_font(14))
    if ylabel:
        draw.text((6, y0 - 16), ylabel, fill=(60, 60, 60), font=font)
    draw.line([(x0, y0), (x0, y1), (x1, y1)], fill=(0, 0, 0), width=1)
    ticks = [t for t in _nice_ticks(lo, hi) if lo - 1e-9 <= t <= hi + 1e-9]

    def ymap(v):
        return y1 - (v - lo) / (hi - lo) * (y1 - y0)
    for t in ticks:
        y = ymap(t)
        draw.line([(x0 - 4, y), (x1, y)], fill=(225, 225, 225))
        draw.line([(x0 - 4, y), (x0, y)], fill=(0, 0, 0))
        s = f"{t:g}"
        draw.text((x0 - 8 - _text_w(draw, s, font), y - 7), s, fill=(0, 0, 0), font=font)
    return ymap


def bar_chart(path, title: str, groups: list[str], series: dict, ylabel: str = "", size=(900, 420)) -> None:
    """Grouped bars: ``series = {name: [value or None per group]}``; non-finite values are drawn at the top edge and
    labelled ``inf``; missing values leave a gap."""
    from PIL import Image, ImageDraw

    W, H = size
    font = _font(12)
    im = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(im)
    vals = [v for s in series.values() for v in s]
    lo, hi = _axes(vals, include_zero=True)
    legend_h = 18 * ((len(series) + 3) // 4)
    box = (70, 40, W - 20, H - 50 - legend_h)
    ymap = _frame(d, W, H, box, lo, hi, font, title, ylabel)
    x0, y0, x1, y1 = box
    ng, ns = max(1, len(groups)), max(1, len(series))
    gw = (x1 - x0) / ng
    bw = max(2.0, 0.8 * gw / ns)
    zero = ymap(min(max(0.0, lo), hi))
    for gi, g in enumerate(groups):
        cx = x0 + gw * (gi + 0.5)
        gl = g if len(g) <= 18 else g[:17] + "…"
        d.text((cx - _text_w(d, gl, font) / 2, y1 + 6), gl, fill=(0, 0, 0), font=font)
        for si, s in enumerate(series.values()):
            v = s[gi] if gi < len(s) else None
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            bx = cx - 0.4 * gw + si * bw
            top = y0 if math.isinf(v) and v > 0 else (y1 if math.isinf(v) else ymap(v))
            col = PALETTE[si % len(PALETTE)]
            d.rectangle([bx, min(top, zero), bx + bw - 1, max(top, zero)], fill=col)
            if math.isinf(v):
                d.text((bx, y0 - 14), "inf", fill=col, font=font)
    _legend(d, list(series), (x0, H - 10 - legend_h), font)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def line_chart(path, title: str, x: list, series: dict, ylabel: str = "", xlabel: str = "frame",
               size=(900, 380)) -> None:
    """Lines ``series = {name: [value or None per x]}``; gaps at None; non-finite values clipped to the top."""
    from PIL import Image, ImageDraw

    W, H = size
    font = _font(12)
    im = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(im)
    vals = [v for s in series.values() for v in s]
    lo, hi = _axes(vals, include_zero=False)
    legend_h = 18 * ((len(series) + 3) // 4)
    box = (70, 40, W - 20, H - 50 - legend_h)
    ymap = _frame(d, W, H, box, lo, hi, font, title, ylabel)
    x0, y0, x1, y1 = box
    n = max(2, len(x))

    def xmap(i):
        return x0 + 10 + (x1 - x0 - 20) * i / (n - 1)
    step = max(1, len(x) // 12)
    for i in range(0, len(x), step):
        s = str(x[i])
        d.text((xmap(i) - _text_w(d, s, font) / 2, y1 + 6), s, fill=(0, 0, 0), font=font)
    d.text((x1 - _text_w(d, xlabel, font), y1 + 22), xlabel, fill=(60, 60, 60), font=font)
    for si, (_name, s) in enumerate(series.items()):
        col = PALETTE[si % len(PALETTE)]
        pts = []
        for i, v in enumerate(s):
            if v is None or math.isnan(v):
                if len(pts) > 1:
                    d.line(pts, fill=col, width=2)
                pts = []
                continue
            y = y0 if math.isinf(v) and v > 0 else (y1 if math.isinf(v) else ymap(v))
            pts.append((xmap(i), y))
            d.ellipse([xmap(i) - 2, y - 2, xmap(i) + 2, y + 2], fill=col)
        if len(pts) > 1:
            d.line(pts, fill=col, width=2)
    _legend(d, list(series), (x0, H - 10 - legend_h), font)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _legend(d, names, origin, font):
    x, y = origin
    for i, name in enumerate(names):
        cx = x + (i % 4) * 200
        cy = y + (i // 4) * 18
        col = PALETTE[i % len(PALETTE)]
        d.rectangle([cx, cy + 2, cx + 12, cy + 12], fill=col)
        d.text((cx + 18, cy), name, fill=(0, 0, 0), font=font)


# ================================================================================================================
# contact sheets
# ================================================================================================================
def contact_sheet(path, cells: dict, views: list[str], frames: list[int], thumb: int = 128, title: str = "") -> None:
    """Grid image: one row per view, one column per frame; ``cells[(view, t)]`` = a PNG path (missing: grey)."""
    from PIL import Image, ImageDraw

    font = _font(12)
    left, top = 48, 40
    W, H = left + thumb * len(frames), top + thumb * len(views)
    im = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.text((4, 4), title, fill=(0, 0, 0), font=_font(14))
    for j, t in enumerate(frames):
        d.text((left + j * thumb + 4, top - 16), f"t={t}", fill=(0, 0, 0), font=font)
    for i, v in enumerate(views):
        d.text((4, top + i * thumb + thumb // 2 - 7), v, fill=(0, 0, 0), font=font)
        for j, t in enumerate(frames):
            box = (left + j * thumb, top + i * thumb)
            p = cells.get((v, t))
            tile = None
            if p is not None and Path(p).is_file():
                try:
                    with Image.open(p) as src:
                        rgba = src.convert("RGBA")
                    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    tile = Image.alpha_composite(bg, rgba).convert("RGB").resize((thumb, thumb),
                                                                                 Image.Resampling.LANCZOS)
                except Exception:  # noqa: BLE001
                    tile = None
            if tile is None:
                tile = Image.new("RGB", (thumb, thumb), (200, 200, 200))
                ImageDraw.Draw(tile).text((8, thumb // 2 - 7), "missing", fill=(90, 90, 90), font=font)
            im.paste(tile, box)
            d.rectangle([box[0], box[1], box[0] + thumb - 1, box[1] + thumb - 1], outline=(220, 220, 220))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _sheet_frames(T: int, n: int) -> list[int]:
    n = max(1, min(int(n), T))
    return sorted({int(round(x)) for x in np.linspace(0, T - 1, n)})


# ================================================================================================================
# everything
# ================================================================================================================
def write_report(report: dict, root, gts: dict, methods: dict, sheet_frames: int = 8) -> dict:
    """Write ``report.json``, ``report.md``, ``plots/`` and ``sheets/`` under ``root``; returns the paths."""
    from ss4d.io_utils import atomic_write_text

    from .scoring import load_renders

    root = Path(root)
    clean = sanitize(report)
    atomic_write_text(root / "report.json", json.dumps(clean, indent=1, sort_keys=False), overwrite=True)
    atomic_write_text(root / "report.md", markdown_report(clean), overwrite=True)
    paths = {"json": root / "report.json", "markdown": root / "report.md", "plots": [], "sheets": []}
    res = clean["results"]
    names = list(res)
    assets = [a["id"] for a in clean["assets"] if a["scored"]]
    plots = root / "plots"
    head = set(headline_assets(clean))
    for key, label, where, _hib in METRICS + ORIENTATION_METRICS:
        if key in ("lpips", "clip") and clean["network_metrics"].get(key) != "computed":
            continue
        series = {}
        for m in names:
            per = [_metric(res[m].get(a, {}), key, where) for a in assets]
            series[m] = per + [_mean([v for a, v in zip(assets, per) if a in head])]
        if not any(v is not None for s in series.values() for v in s):
            continue
        fname = plots / f"bar_{label.lower().replace(' ', '_').replace('.', '').replace('°', 'deg')}.png"
        bar_chart(fname, f"{label} per asset", assets + ["mean (held-out)"], series, label)
        paths["plots"].append(fname)
    T = clean["protocol"]["num_frames"]
    for a in assets:
        s_psnr, s_iou = {}, {}
        for m in names:
            e = res[m].get(a, {})
            if e.get("status") not in ("ok", "partial"):
                continue
            views = list(e["views"])[1:] or list(e["views"])
            s_psnr[m] = [_mean([_num(e["views"][v]["psnr"][t]) for v in views]) for t in range(T)]
            gi = (e.get("geometry") or {}).get("voxel_iou")
            if gi:
                s_iou[m] = [_num(x) for x in gi]
        if s_psnr:
            line_chart(plots / f"frames_{a}.png", f"{a}: novel-view PSNR per frame", list(range(T)), s_psnr, "PSNR")
            paths["plots"].append(plots / f"frames_{a}.png")
        if s_iou:
            line_chart(plots / f"voxel_iou_{a}.png", f"{a}: voxel IoU per frame", list(range(T)), s_iou,
                       "voxel IoU")
            paths["plots"].append(plots / f"voxel_iou_{a}.png")
    # contact sheets
    for a, gt in gts.items():
        frames = _sheet_frames(gt.num_frames, sheet_frames)
        cells = {(v, t): gt.image_path(v, t) for v in gt.views for t in frames}
        p = root / "sheets" / a / "ground_truth.png"
        contact_sheet(p, cells, gt.views, frames, title=f"{a}: ground truth")
        paths["sheets"].append(p)
        for m, meth in methods.items():
            e = res[m].get(a, {})
            if e.get("status") not in ("ok", "partial"):
                continue
            folder = Path(meth.root) / a
            rs = load_renders(folder, gt)
            cells = {(v, t): rs.frames[v].get(t) for v in gt.views for t in frames}
            p = root / "sheets" / a / f"{m}.png"
            contact_sheet(p, cells, gt.views, frames, title=f"{a}: {m}")
            paths["sheets"].append(p)
    return paths

"""Silhouette guidance of the structure sampler (an ss4d addition, not in SS4D; training-free).

Every input gives the object's silhouette, in a view the model's frame fixes up to the crop: the default model is
trained view-aligned (input camera at yaw 0, elevation in [-10, 30] degrees, `ss4d.data.align`), and the
preprocessing crops the clip to 1.2 x the union box of its masks. At each sampler step the flow's predicted clean
latent is decoded to occupancy, projected into every input frame from the best-fitting candidate camera (cropped by
the same rule), and moved down the gradient of the mismatch with the input masks (covered inside, empty outside).
Optional carve and fill steps then remove voxels that project outside the (dilated) masks and add voxels where a
mask pixel is not covered, at the depths of the nearest covered pixel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..render.camera import orbit_camera

__all__ = ["SilhouetteGuide", "SilhouetteSettings", "read_silhouette_settings"]


@dataclass(frozen=True)
class SilhouetteSettings:
    """`pipeline.json` `"silhouette_guidance"`: `strength` = RMS change of the clean latent per sampler step (0: off),
    `carve` / `fill` = after sampling, drop voxels outside the dilated masks / add voxels where the masks are not
    covered (:meth:`SilhouetteGuide.refine`); the candidate input cameras and the resolution at
    which silhouettes are compared."""

    strength: float = 0.0
    carve: bool = False
    fill: bool = False
    size: int = 32
    yaws_deg: tuple[float, ...] = (-20.0, -10.0, 0.0, 10.0, 20.0)
    elevations_deg: tuple[float, ...] = (-10.0, 0.0, 10.0, 20.0, 30.0)
    fov_deg: float = 40.0
    radius: float = 2.0
    carve_dilation: int = 0

    @property
    def enabled(self) -> bool:
        return self.strength > 0 or self.carve or self.fill


def read_silhouette_settings(value, error=ValueError) -> SilhouetteSettings:
    """`None`/`false` (off), a number (the strength) or an object with the fields of :class:`SilhouetteSettings`."""
    if value is None or value is False:
        return SilhouetteSettings()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"strength": value}
    if not isinstance(value, dict):
        raise error(f"pipeline.json: silhouette_guidance must be a number or an object, got {value!r}")
    known = set(SilhouetteSettings.__dataclass_fields__)
    bad = sorted(set(value) - known)
    if bad:
        raise error(f"pipeline.json: silhouette_guidance has unknown fields {bad}; known: {sorted(known)}")
    kw = {k: (tuple(float(x) for x in v) if k in ("yaws_deg", "elevations_deg") else v) for k, v in value.items()}
    s = SilhouetteSettings(**kw)
    if not (isinstance(s.strength, (int, float)) and s.strength >= 0) or s.size < 4 or not s.yaws_deg \
            or not s.elevations_deg:
        raise error(f"pipeline.json: invalid silhouette_guidance {value!r}")
    return s


def _area_resize(masks: torch.Tensor, size: int) -> torch.Tensor:
    """``[T, H, W]`` in [0, 1] -> ``[T, size, size]`` by area averaging (antialiased)."""
    return F.interpolate(masks[:, None].float(), size=(size, size), mode="area")[:, 0]


class SilhouetteGuide:
    """Pulls the structure sampler toward the input masks (see the module doc). `decoder`: the structure decoder
    (latent ``[T, C, r, r, r]`` -> occupancy logits ``[T, 1, R, R, R]``); `masks`: the preprocessed input's alpha
    ``[T, H, W]`` (uint8 or float in [0, 1])."""

    def __init__(self, decoder: torch.nn.Module, masks, settings: SilhouetteSettings, dtype=torch.float32):
        self.decoder, self.settings, self.dtype = decoder, settings, dtype
        m = torch.as_tensor(np.asarray(masks))
        m = m.float() / 255.0 if m.dtype == torch.uint8 else m.float()
        self.full_masks = m
        self.target = _area_resize(m, settings.size)
        self._uv_cache: dict = {}
        self.views: list = []  # (yaw, elevation) chosen at each guided step, for inspection
        self.chosen_view: dict = {}  # the view that refine() carved / filled in (input_view_camera's dict)

    # ----- geometry -----
    def _projection(self, R: int, yaw: float, elev: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image coordinates ``[R^3, 2]`` and view depths ``[R^3]`` of the voxel centres of an ``R``^3
        grid (x-major, the decoder's layout) in the uncropped candidate view (cached)."""
        key = (R, yaw, elev)
        if key not in self._uv_cache:
            s = self.settings
            i = (torch.arange(R, dtype=torch.float32) + 0.5) / R - 0.5
            xyz = torch.stack(torch.meshgrid(i, i, i, indexing="ij"), -1).reshape(-1, 3)
            cam = orbit_camera(math.radians(yaw), math.radians(elev), s.radius, math.radians(s.fov_deg), 1, 1)
            self._uv_cache[key] = cam.project(xyz)
        return self._uv_cache[key]

    def _uv(self, R: int, yaw: float, elev: float) -> torch.Tensor:
        return self._projection(R, yaw, elev)[0]

    @staticmethod
    def crop_box(uv: torch.Tensor, occupied: torch.Tensor, half_voxel: float) -> tuple[float, float, float, float]:
        """The preprocessing's crop for a prediction: a square of 1.2 x the union box (over frames) of the occupied
        voxels' projections, widened by half a voxel's footprint; the whole grid when nothing is occupied."""
        pts = uv[occupied.any(0)] if bool(occupied.any()) else uv
        lo = pts.min(0).values - half_voxel
        hi = pts.max(0).values + half_voxel
        c = (lo + hi) / 2
        h = float((hi - lo).max()) / 2 * 1.2
        return float(c[0]) - h, float(c[1]) - h, float(c[0]) + h, float(c[1]) + h

    def _footprints(self, uv: torch.Tensor, box, R: int, S: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(voxel index, flat pixel index, covered fraction of the pixel) of every pair where a voxel's projected
        square (its centre +- half its projected size) overlaps a pixel of the cropped ``S``^2 image (default: the
        comparison size)."""
        S = S or self.settings.size
        x0, y0, x1, y1 = box
        h = self._half_voxel(uv, R)
        fx = (uv[:, 0] - x0) / (x1 - x0) * S
        fy = (uv[:, 1] - y0) / (y1 - y0) * S
        hx, hy = h / (x1 - x0) * S, h / (y1 - y0) * S
        reach = int(math.ceil(max(hx, hy))) + 1
        vox, pix, frac = [], [], []
        base_x, base_y = fx.floor().long(), fy.floor().long()
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                px, py = base_x + dx, base_y + dy
                # the pixel [px, px+1) x [py, py+1) overlaps the square [f-h, f+h]
                ox = (torch.minimum(px + 1, fx + hx) - torch.maximum(px.float(), fx - hx)).clamp(0, 1)
                oy = (torch.minimum(py + 1, fy + hy) - torch.maximum(py.float(), fy - hy)).clamp(0, 1)
                ok = (ox * oy > 0) & (px >= 0) & (px < S) & (py >= 0) & (py < S)
                idx = ok.nonzero().flatten()
                vox.append(idx)
                pix.append(py[idx] * S + px[idx])
                frac.append((ox * oy)[idx])
        return torch.cat(vox), torch.cat(pix), torch.cat(frac)

    def silhouettes(self, logits: torch.Tensor, uv: torch.Tensor, box) -> torch.Tensor:
        """Soft silhouettes ``[T, S, S]``: ``1 - prod(1 - p)`` over the voxels whose footprint overlaps each pixel."""
        T, R = logits.shape[0], logits.shape[-1]
        S = self.settings.size
        logq = F.logsigmoid(-logits.float().reshape(T, -1))  # log(1 - sigmoid(l)), stable
        vox, pix, frac = self._footprints(uv, box, R)
        acc = torch.zeros(T, S * S, dtype=logq.dtype, device=logq.device)
        acc = acc.index_add(1, pix.to(logq.device), logq[:, vox.to(logq.device)] * frac.to(logq))
        return (1 - torch.exp(acc)).reshape(T, S, S)

    def _view_fits(self, logits: torch.Tensor) -> list[tuple[float, float, float, tuple]]:
        """(loss, yaw, elevation, crop) of every candidate camera, best first."""
        R = logits.shape[-1]
        occ = (logits[:, 0] > 0).reshape(logits.shape[0], -1)
        fits = []
        for yaw in self.settings.yaws_deg:
            for el in self.settings.elevations_deg:
                uv = self._uv(R, yaw, el)
                box = self.crop_box(uv, occ, self._half_voxel(uv, R))
                sil = self.silhouettes(logits, uv, box)
                fits.append((float(F.mse_loss(sil, self.target.to(sil))), yaw, el, box))
        return sorted(fits, key=lambda f: f[0])

    @staticmethod
    def _half_voxel(uv: torch.Tensor, R: int) -> float:
        """Half the typical projected size of one voxel (normalised image units)."""
        ext = (uv.max(0).values - uv.min(0).values).max()
        return float(ext) / R / 2

    # ----- sampler hook -----
    def __call__(self, x: torch.Tensor, t: float, v: torch.Tensor, sigma_min: float = 1e-5) -> torch.Tensor:
        """The guided velocity: the clean latent the flow predicts, ``x0 = (1-s) x - (s + (1-s) t) v``, moved by
        ``strength`` (per-frame RMS) down the gradient of the silhouette mismatch; returned as a velocity."""
        s = self.settings
        if s.strength <= 0 or t <= 0:
            return v
        k = sigma_min + (1 - sigma_min) * t
        x0 = ((1 - sigma_min) * x - k * v).detach()
        with torch.enable_grad():
            z = x0.clone().requires_grad_(True)
            logits = self.decoder(z.to(self.dtype)).float()
            with torch.no_grad():
                _loss, yaw, el, box = self._view_fits(logits.detach())[0]
            self.views.append((yaw, el))
            sil = self.silhouettes(logits, self._uv(logits.shape[-1], yaw, el), box)
            loss = F.mse_loss(sil, self.target.to(sil), reduction="sum")
            (g,) = torch.autograd.grad(loss, z)
        rms = g.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1))
        delta = -s.strength * g / rms
        return v - delta / k

    # ----- carve / fill -----
    @torch.no_grad()
    def refine(self, logits: torch.Tensor) -> torch.Tensor:
        """Occupancy ``[T, R, R, R]`` (bool) of `logits`, in the best-fitting candidate view: with `carve`, without
        the voxels whose centre projects outside the (dilated) mask of its frame; with `fill`, plus voxels for mask
        pixels that no voxel covers, spanning the depth range (front to back) of the nearest covered pixel."""
        from scipy.ndimage import distance_transform_edt

        st = self.settings
        T, R = logits.shape[0], logits.shape[-1]
        _loss, yaw, el, box = self._view_fits(logits)[0]
        self.chosen_view = {"yaw_deg": float(yaw), "pitch_deg": float(el), "crop": tuple(float(v) for v in box)}
        uv, depth = self._projection(R, yaw, el)
        S = max(st.size, R)
        soft = _area_resize(self.full_masks, S)
        x0, y0, x1, y1 = box  # the pixel under each voxel centre
        cx = ((uv[:, 0] - x0) / (x1 - x0) * S).floor().long()
        cy = ((uv[:, 1] - y0) / (y1 - y0) * S).floor().long()
        vox = ((cx >= 0) & (cx < S) & (cy >= 0) & (cy < S)).nonzero().flatten()
        pix = cy[vox] * S + cx[vox]
        d = depth[vox]
        occ = (logits[:, 0] > 0).reshape(T, -1).cpu()
        out = occ.clone()
        for t in range(T):
            if st.carve:  # keep a voxel whose centre falls on (dilated) object
                m = soft[t] > 0.5
                dil = st.carve_dilation
                if dil > 0:
                    m = F.max_pool2d(m[None, None].float(), 2 * dil + 1, stride=1, padding=dil)[0, 0] > 0
                keep = torch.zeros(R ** 3, dtype=torch.bool)
                keep[vox] = m.flatten()[pix]
                out[t] &= keep
            if st.fill:
                o = out[t][vox]
                if not bool(o.any()):
                    continue
                front = torch.full((S * S,), float("inf")).scatter_reduce(0, pix[o], d[o], "amin")
                back = torch.full((S * S,), float("-inf")).scatter_reduce(0, pix[o], d[o], "amax")
                covered = torch.isfinite(front).reshape(S, S).numpy()
                want = (soft[t] > 0.5).numpy() & ~covered
                if not want.any():
                    continue
                _dist, (iy, ix) = distance_transform_edt(~covered, return_indices=True)
                near = torch.from_numpy(iy * S + ix).flatten()  # nearest covered pixel of every pixel
                f, b = front[near][pix], back[near][pix]
                add = torch.from_numpy(want).flatten()[pix] & (d >= f - 1e-6) & (d <= b + 1e-6)
                out[t][vox[add]] = True
        return out.reshape(T, R, R, R).to(logits.device)

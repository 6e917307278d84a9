"""Rectified-flow Euler samplers with classifier-free guidance, guidance interval and time rescaling
(TRELLIS `FlowEulerSampler` / `FlowEulerCfgSampler` / `FlowEulerGuidanceIntervalSampler`, spec §1.7).

Time grid `t_i = 1 - i/steps` (float64), rescaled `t' = r t / (1 + (r - 1) t)`; the model gets `float32(1000 t')`
per batch entry; `x <- x - (t' - t'_next) v`; CFG `v = (1 + s) v_cond - s v_neg` (cond evaluated first) when
`lo <= t' <= hi`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..sparse.tensor import SparseTensor


def time_grid(steps: int, rescale_t: float = 1.0) -> np.ndarray:
    if steps < 1:
        raise ValueError("steps must be >= 1")
    t = np.linspace(1, 0, steps + 1)
    return rescale_t * t / (1 + (rescale_t - 1) * t)


def _feats(x):
    return x.feats if isinstance(x, SparseTensor) else x


def _like(x, f):
    return x.replace(f) if isinstance(x, SparseTensor) else f


@dataclass
class SamplerTrace:
    """Per-call and per-step record (for tests and debugging)."""
    calls_t: list = field(default_factory=list)
    calls_neg: list = field(default_factory=list)
    pred_x_0: list = field(default_factory=list)
    pred_x_t: list = field(default_factory=list)


class FlowEulerSampler:
    def __init__(self, sigma_min: float = 1e-5):
        self.sigma_min = sigma_min

    def _v(self, model, x, t, cond, trace, neg=False, **kw):
        tt = torch.full((x.batch_size if isinstance(x, SparseTensor) else x.shape[0],), 1000 * t,
                        dtype=torch.float32, device=_feats(x).device)
        if trace is not None:
            trace.calls_t.append(tt.clone())
            trace.calls_neg.append(neg)
        return _feats(model(x, tt, cond, **kw))

    def velocity(self, model, x, t, cond, neg_cond=None, cfg_strength=0.0, cfg_interval=(0.0, 1.0), trace=None,
                 **kw):
        v = self._v(model, x, t, cond, trace, **kw)
        if cfg_strength and neg_cond is not None and cfg_interval[0] <= t <= cfg_interval[1]:
            vn = self._v(model, x, t, neg_cond, trace, neg=True, **kw)
            v = (1 + cfg_strength) * v - cfg_strength * vn
        return v

    def sample(self, model: Callable, noise, cond, neg_cond=None, steps: int = 25, rescale_t: float = 1.0,
               cfg_strength: float = 0.0, cfg_interval=(0.0, 1.0), trace: SamplerTrace | None = None,
               progress: Callable[[int, int], None] | None = None, guide: Callable | None = None, **kw):
        """Integrate from t=1 (noise) to t=0; `kw` (e.g. num_frames) is passed to the model. `guide(x, t, v,
        sigma_min) -> v` (optional, not in the official samplers) may steer each step's velocity."""
        ts = time_grid(steps, rescale_t)
        x = noise
        for i in range(steps):
            t, t_prev = float(ts[i]), float(ts[i + 1])
            v = self.velocity(model, x, t, cond, neg_cond, cfg_strength, tuple(cfg_interval), trace, **kw)
            if guide is not None:
                v = guide(x, t, v, self.sigma_min)
            xf = _feats(x)
            if trace is not None:
                s = self.sigma_min
                trace.pred_x_0.append((1 - s) * xf - (s + (1 - s) * t) * v)
            x = _like(x, xf - (t - t_prev) * v)
            if trace is not None:
                trace.pred_x_t.append(_feats(x))
            if progress is not None:
                progress(i + 1, steps)
        return x


class FlowEulerCfgSampler(FlowEulerSampler):
    """CFG at every step (interval [0, 1])."""


class FlowEulerGuidanceIntervalSampler(FlowEulerSampler):
    """CFG only inside `cfg_interval` of the rescaled time."""


SAMPLERS = {"FlowEulerSampler": FlowEulerSampler, "FlowEulerCfgSampler": FlowEulerCfgSampler,
            "FlowEulerGuidanceIntervalSampler": FlowEulerGuidanceIntervalSampler}


def build_sampler(name: str, args: dict | None = None) -> FlowEulerSampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return SAMPLERS[name](**(args or {}))


def run_sampler_case(model, cfg: dict, inp: dict) -> dict[str, torch.Tensor]:
    """Run the official sampler test vector (see ss4d.testing.vectors)."""
    sampler = build_sampler(cfg["sampler"]["class"], cfg["sampler"]["args"])
    params = cfg["sample_params"]
    trace = SamplerTrace()
    with torch.no_grad():
        x = sampler.sample(model, inp["noise"], inp["cond"], inp["neg_cond"], trace=trace,
                           num_frames=cfg["forward"]["num_frames"], **params)
    return {"samples": x, "t_seq": torch.from_numpy(time_grid(params["steps"], params["rescale_t"])),
            "model_call_t": torch.stack(trace.calls_t), "model_call_is_neg_cond": torch.tensor(trace.calls_neg),
            "pred_x_0": torch.stack(trace.pred_x_0), "pred_x_t": torch.stack(trace.pred_x_t)}

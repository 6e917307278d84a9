"""Run one official test-vector case with ss4d: build the module the case describes, load its state dict
strictly, run it on the case's inputs and return outputs named as in the case's `outputs.safetensors`
(which is never read here)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..sparse import SparseTensor


def _hooks(model: torch.nn.Module, names: list[str], store: dict):
    handles = []
    mods = dict(model.named_modules())
    for n in names:
        if n not in mods:
            continue

        def hook(_m, _i, out, n=n):
            if isinstance(out, SparseTensor):
                store[f"inter.{n}.feats"] = out.feats.detach().clone()
                store[f"inter.{n}.coords"] = out.coords.clone()
            elif isinstance(out, torch.Tensor):
                store[f"inter.{n}"] = out.detach().clone()

        handles.append(mods[n].register_forward_hook(hook))
    return handles


def _load(model, case: Path):
    f = case / "model.safetensors"
    if f.exists():
        model.load_state_dict(load_file(str(f)), strict=True)
    return model.eval()


def _sparse_op(cfg, case, inp):
    from ..sparse import SparseDownsample, SparseUpsample, build_sparse_conv, sparse_downsample

    cls = cfg["model"]["class"]
    x = SparseTensor(inp["x_feats"], inp["x_coords"])
    t = cfg["forward"].get("num_frames")
    if cls.startswith("SparseConv"):
        m = _load(build_sparse_conv(cls, **cfg["model"]["args"]), case)
        y = m(x, t)
    elif cls in ("SparseDownsample", "SparseDownsample_t"):
        y, inverse = sparse_downsample(x, 2, "time" if cls.endswith("_t") else "space")
        return {"y_feats": y.feats, "y_coords": y.coords, "inverse_index": inverse}
    elif cls in ("SparseUpsample", "SparseUpsample_t"):
        axis = "time" if cls.endswith("_t") else "space"
        d = SparseDownsample(2, axis)(x)
        y = SparseUpsample(2, axis)(d.replace(inp["g_feats"]))
    else:
        raise ValueError(f"unknown sparse op {cls}")
    return {"y_feats": y.feats, "y_coords": y.coords}


def _pipeline_case(case: Path, cfg: dict, inp: dict) -> dict[str, torch.Tensor]:
    """The whole official pipeline (`pipeline_e2e`): the case folder is an official checkpoint folder; run its frames
    through `VideoTo4DPipeline.from_pretrained(case)` with its seed, as `ss4d generate` would."""
    from ..pipeline.video_to_4d import VideoTo4DPipeline

    pipe = VideoTo4DPipeline.from_pretrained(case)
    trace: dict = {}
    res = pipe(inp["frames"].numpy(), seed=int(cfg["seed"]), trace=trace)
    out = {"cond_images": torch.from_numpy(res.frames), "cond": trace["cond"]["sparse_structure_flow_model"],
           "ss_latent": trace["ss_latent"], "slat_latent": trace["slat_latent"], "slat": trace["slat"].feats,
           "coords": torch.cat([torch.cat([torch.full((len(c), 1), f, dtype=torch.int32), c.int()], 1)
                                for f, c in enumerate(res.coords)])}
    for name, key in (("ss", "ss_sampler"), ("slat", "slat_sampler")):
        st = trace[key]
        out.update({f"inter.{name}_noise": trace[f"{name}_noise"], f"inter.{name}_model_t": torch.stack(st.calls_t),
                    f"inter.{name}_model_is_neg_cond": torch.tensor(st.calls_neg),
                    f"inter.{name}_pred_x_t": torch.stack(st.pred_x_t)})
    out["inter.ss_logits"] = trace["ss_logits"]
    gs = res.gaussians
    for k in ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity"):
        out[f"gs.{k}"] = torch.cat([g.raw_tensors()[k] for g in gs])
    for k in ("get_xyz", "get_scaling", "get_rotation", "get_opacity"):
        out[f"gs.{k}"] = torch.cat([getattr(g, k) for g in gs])
    out["gs.frame_index"] = torch.cat([torch.full((len(g.get_xyz),), f, dtype=torch.int32) for f, g in enumerate(gs)])
    out["gs.scale_bias"] = gs[0].scale_bias.reshape(1)
    out["gs.opacity_bias"] = gs[0].opacity_bias_logit.reshape(1)
    return out


def run_case(case_dir) -> dict[str, torch.Tensor]:
    from ..models import build

    case = Path(case_dir)
    cfg = json.loads((case / "config.json").read_text())
    inp = load_file(str(case / "inputs.safetensors"))
    if "pipeline" in cfg:
        return _pipeline_case(case, cfg, inp)
    cls = cfg["model"]["class"]
    fwd = cfg.get("forward", {})
    t = fwd.get("num_frames")
    if "sampler" in cfg:
        from ..pipeline.samplers import run_sampler_case

        model = _load(build(cls, cfg["model"]["args"]), case)
        return run_sampler_case(model, cfg, inp)
    if cls.startswith("SparseConv") or cls.startswith("SparseDownsample") or cls.startswith("SparseUpsample"):
        return _sparse_op(cfg, case, inp)
    model = _load(build(cls, cfg["model"]["args"]), case)
    out: dict[str, torch.Tensor] = {}
    if cls == "DinoVisionTransformer":
        import torch.nn.functional as F

        ret = model.forward_features(inp["x_normalized"])
        out.update({k: v for k, v in ret.items() if isinstance(v, torch.Tensor)})
        out["cond"] = F.layer_norm(ret["x_prenorm"], ret["x_prenorm"].shape[-1:])
        return out
    names = [n for n, _ in model.named_modules() if n]
    handles = _hooks(model, names, out)
    try:
        if cls.startswith("SparseStructureFlow"):
            out["out"] = model(inp["x"], inp["t"], inp["cond"], num_frames=t)
        elif cls == "SparseStructureEncoder":
            z, mean, logvar = model(inp["x"], sample_posterior=False, return_raw=True)
            out.update(z=z, mean=mean, logvar=logvar)
        elif cls == "SparseStructureDecoder":
            out["logits"] = model(inp["z"])
        elif "SLatFlow" in cls:
            y = model(SparseTensor(inp["x_feats"], inp["x_coords"]), inp["t"], inp["cond"], num_frames=t)
            out.update(out_feats=y.feats, out_coords=y.coords)
        elif "SLatEncoder" in cls:
            z, mean, logvar = model(SparseTensor(inp["x_feats"], inp["x_coords"]), t, sample_posterior=False,
                                    return_raw=True)
            out.update(z_feats=z.feats, mean=mean, logvar=logvar)
        elif "SLatGaussianDecoder" in cls:
            x = SparseTensor(inp["x_feats"], inp["x_coords"])
            raw = model.decode_raw(x, t)
            out["raw_out_feats"] = raw.feats
            for f, g in enumerate(model.to_representation(raw)):
                for k, v in g.raw_tensors().items():
                    out[f"gs.{f}.{k}"] = v
                out[f"gs.{f}.get_xyz"] = g.get_xyz
                out[f"gs.{f}.get_scaling"] = g.get_scaling
                out[f"gs.{f}.get_rotation"] = g.get_rotation
                out[f"gs.{f}.get_opacity"] = g.get_opacity
                out[f"gs.{f}.get_features"] = g.get_features
                out[f"gs.{f}.scale_bias"] = g.scale_bias.reshape(1)
                out[f"gs.{f}.opacity_bias"] = g.opacity_bias_logit.reshape(1)
        else:
            raise ValueError(f"run_case: unsupported class {cls}")
    finally:
        for h in handles:
            h.remove()
    return out

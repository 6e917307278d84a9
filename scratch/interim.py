"""Interim model folder from the latest training checkpoints (raw weights) without touching the runs."""
import json, shutil, sys, torch
from pathlib import Path
from ss4d.train import checkpoints as ck
from ss4d.train.loop import build_role
from ss4d.models.checkpoint import save_model, load_model, read_model_config
from ss4d.models.tiny import SAMPLER
out = Path(sys.argv[1]); shutil.rmtree(out, ignore_errors=True); (out / "ckpts").mkdir(parents=True)
def from_run(run, role, key):
    cfg = json.loads((Path(run) / "config.json").read_text())
    st = ck.load_checkpoint(ck.latest_checkpoint(Path(run) / "ckpts"))
    m, spec = build_role(role, cfg["models"][role], frozen=True)
    m.load_state_dict(st["trainer"]["models"][role])
    args = dict(spec["args"])
    if key == "slat_flow_model": args["window_size"] = 4
    save_model(m, spec["name"], args, out / "ckpts" / key)
    return st
from_run("runs/default/ss_flow", "flow", "sparse_structure_flow_model")
from_run("runs/default/ss_flow", "conditioner", "image_cond_ss")
st = from_run("runs/default/slat_flow", "flow", "slat_flow_model")
from_run("runs/default/slat_flow", "conditioner", "image_cond_slat")
if Path("runs/default/slat_decoder/ckpts").exists() and ck.latest_checkpoint(Path("runs/default/slat_decoder/ckpts")):
    from_run("runs/default/slat_decoder", "decoder", "slat_decoder_gs")
else:
    shutil.copy("runs/default/slat_vae/export/ckpts/slat_decoder_gs.json", out / "ckpts")
    shutil.copy("runs/default/slat_vae/export/ckpts/slat_decoder_gs.safetensors", out / "ckpts")
for ext in (".json", ".safetensors"):
    shutil.copy("runs/default/ss_vae/export/ckpts/sparse_structure_decoder" + ext, out / "ckpts")
norm = st["extra"]["slat_normalization"]
pipe = {"name": "SS4DVideoTo4DPipeline", "args": {
    "models": {k: f"ckpts/{k}" for k in ["sparse_structure_decoder", "slat_decoder_gs", "sparse_structure_flow_model", "slat_flow_model"]},
    "sparse_structure_sampler": SAMPLER, "slat_sampler": SAMPLER,
    "slat_normalization": {"mean": norm["mean"], "std": norm["std"]},
    "image_cond_model": {"ckpts": {"sparse_structure_flow_model": "ckpts/image_cond_ss", "slat_flow_model": "ckpts/image_cond_slat"}},
    "num_frames": 32}}
(out / "pipeline.json").write_text(json.dumps(pipe, indent=2))
print("ok", out)

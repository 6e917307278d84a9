"""Held-out structure IoU of an SS-flow training checkpoint: procedural seed-1 clips + Fox (canonical frame)."""
import sys, json, torch, numpy as np
from pathlib import Path
from PIL import Image
from ss4d.train import checkpoints as ck
from ss4d.train.loop import build_role
from ss4d.models.checkpoint import load_model
from ss4d.pipeline.preprocess import preprocess_frames
from ss4d.train import flow_matching as fm
torch.set_num_threads(1)
run = Path(sys.argv[1]); step = sys.argv[2]
cfg = json.loads((run / "config.json").read_text())
st = ck.load_checkpoint(run / "ckpts" / f"step_{int(step):08d}.pt")
flow, _ = build_role("flow", cfg["models"]["flow"]); cond_m, _ = build_role("conditioner", cfg["models"]["conditioner"], frozen=True)
flow.load_state_dict(st["trainer"]["models"]["flow"])
if "conditioner" in st["trainer"]["models"]:
    cond_m.load_state_dict(st["trainer"]["models"]["conditioner"])
flow.eval(); cond_m.eval()
dec = load_model("runs/default/ss_vae/export/ckpts/sparse_structure_decoder").eval()
T = 8
res = []
for aid in ["proc1_000000", "proc1_000001", "proc1_000002", "proc1_000003", "Fox"]:
    d = Path("runs/eval/gt_cache/gt") / aid
    idx = list(range(0, 32, 4))
    frames = [np.asarray(Image.open(d / "v000" / f"{i:03d}.png").convert("RGBA")) for i in idx]
    pre, _, _ = preprocess_frames(frames, size=128)
    x = torch.from_numpy(pre).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        c = cond_m(x).float()
        noise = torch.randn(T, 8, 8, 8, 8, generator=torch.Generator().manual_seed(0))
        fn = lambda z, tt, unc: flow(z, torch.full((T,), 1000.0 * tt), torch.zeros_like(c) if unc else c, num_frames=T).float()
        z = fm.euler_sample(fn, noise, 12, cfg_strength=0.0, sigma_min=1e-5)
        occ = dec(z)[:, 0] > 0
    vox = np.load(d / "voxels.npz")
    ious = []
    for k, i in enumerate(idx):
        g = torch.from_numpy(vox[f"f{i:03d}"]).long() // 2
        gt = torch.zeros(32, 32, 32, dtype=torch.bool); gt[g[:, 0], g[:, 1], g[:, 2]] = True
        ious.append(((occ[k] & gt).sum() / (occ[k] | gt).sum().clamp(min=1)).item())
    res.append((aid, int(occ.sum()) // T, round(float(np.mean(ious)), 3)))
print(run.name, step, res, "mean", round(float(np.mean([r[2] for r in res])), 3))

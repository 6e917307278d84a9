import time, torch, sys
from ss4d.data.dataset import ClipDataset, collate
from ss4d.models.checkpoint import load_model
from ss4d.train import flow_matching as fm
from ss4d.train.loop import normalize_clip
torch.manual_seed(0)
ex = "runs/default/ss_vae/export/ckpts/" if len(sys.argv) < 2 else sys.argv[1]
enc = load_model(ex + "sparse_structure_encoder").eval()
dec = load_model(ex + "sparse_structure_decoder").eval()
flow = load_model("ss4d/assets/default_model/ckpts/sparse_structure_flow_model").eval()
cond_m = load_model("ss4d/assets/default_model/ckpts/image_cond_ss").eval()
for root in ["datasets/assets_r32", "datasets/procedural_r32"]:
    ds = ClipDataset(root, num_frames=8, windows="first", views_per_frame=0, seed=0)
    for i in range(0, len(ds), max(1, len(ds)//3)):
        s = normalize_clip(ds[i]); occ = s["occupancy"]
        with torch.no_grad():
            z = enc(occ.float()[:, None], sample_posterior=False)
            pred = dec(z)[:, 0] > 0
            iou = (pred & occ).sum().item() / max((pred | occ).sum().item(), 1)
            c = cond_m(s["cond_frames"]).float()
            T = 8
            def fn(x, tt, uncond):
                cc = torch.zeros_like(c) if uncond else c
                return flow(x, torch.full((T,), 1000.0 * tt), cc, num_frames=T).float()
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
            zz = fm.euler_sample(fn, noise, 12, cfg_strength=0.0, sigma_min=1e-5)
            p2 = dec(zz)[:, 0] > 0
            iou2 = (p2 & occ).sum().item() / max((p2 | occ).sum().item(), 1)
        print(root.split('/')[-1], s["id"], "gt", occ.sum().item()//8, "rec", pred.sum().item()//8, f"iou {iou:.3f}", "flow", p2.sum().item()//8, f"iou {iou2:.3f}", flush=True)

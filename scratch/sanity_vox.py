import torch, numpy as np
from ss4d.models.checkpoint import load_model
from ss4d.data.dataset import ClipDataset
enc = load_model("runs/default/ss_vae/export/ckpts/sparse_structure_encoder").eval()
dec = load_model("runs/default/ss_vae/export/ckpts/sparse_structure_decoder").eval()
vox = np.load("runs/eval/gt_cache/gt/proc1_000000/voxels.npz")
g = torch.from_numpy(vox["f000"]).long() // 2
gt = torch.zeros(1, 1, 32, 32, 32); gt[0, 0, g[:, 0], g[:, 1], g[:, 2]] = 1
with torch.no_grad():
    occ = dec(enc(gt, sample_posterior=False))[:, 0] > 0
b = gt[:, 0] > 0
print("gt", int(b.sum()), "rec", int(occ.sum()), "iou", ((occ & b).sum() / (occ | b).sum()).item())
ds = ClipDataset("datasets/procedural_r32", num_frames=1, windows="first", views_per_frame=0, load_cond=False)
print("train clip voxels", [int(ds[i]["occupancy"].sum()) for i in range(5)])

import torch, numpy as np, sys
from PIL import Image
from ss4d.data.dataset import ClipDataset
from ss4d.models.checkpoint import load_model
from ss4d.sparse import SparseTensor
from ss4d.render.rasterizer import rasterize
from ss4d.train.trainers import encode_slat
torch.set_num_threads(1)
enc = load_model("runs/default/slat_vae/export/ckpts/slat_encoder").eval()
dec = load_model(sys.argv[1] if len(sys.argv) > 1 else "runs/default/slat_vae/export/ckpts/slat_decoder_gs").eval()
ds = ClipDataset("datasets/assets_r32", num_frames=2, windows="first", views_per_frame=2, view_selection="first", load_cond=False)
ims = []
for i in [10, 20, 40]:
    s = ds[i]
    x = SparseTensor(s["feats"], s["coords"], 2)
    with torch.no_grad():
        z = enc(x, num_frames=2, sample_posterior=False)
        gs = dec(z, num_frames=2)
    for v in range(2):
        cam = s["cameras"][0][v]
        out = rasterize(gs[0], cam, bg=(1, 1, 1))["color"].clamp(0, 1)
        gt = s["views"][0, v]
        gtc = gt[:3] * gt[3:] + (1 - gt[3:])
        psnr = -10 * torch.log10(((out - gtc) ** 2).mean())
        print(s["id"], v, f"psnr {psnr:.2f}", "opacity mean", gs[0].get_opacity.mean().item())
        ims.append(torch.cat([gtc, out], 2))
img = torch.cat(ims, 1).permute(1, 2, 0).numpy()
Image.fromarray((img * 255).astype(np.uint8)).save("/tmp/vae_rec.png")

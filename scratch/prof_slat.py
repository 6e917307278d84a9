import time, torch
from ss4d.data.dataset import ClipDataset
from ss4d.pipeline.video_to_4d import VideoTo4DPipeline
torch.set_num_threads(2)
pipe = VideoTo4DPipeline.from_pretrained()
ds = ClipDataset("datasets/assets_r32", num_frames=16, windows="first", views_per_frame=0, load_cond=False)
s = ds[3]
c = s["coords"].clone()
c2 = c.clone(); c2[:, 0] += 16
coords = torch.cat([c, c2]).int()
print("voxels/frame", coords.shape[0] / 32)
cond = torch.randn(32, 64, 128)
g = torch.Generator().manual_seed(0)
import cProfile, pstats
t = time.perf_counter()
slat = pipe.sample_latents(cond, coords, g, steps=1, cfg=0)
print("1 step no cfg", time.perf_counter() - t)
t = time.perf_counter()
gs = pipe.decode(slat, 32)
print("decode", time.perf_counter() - t)
pr = cProfile.Profile(); pr.enable()
slat = pipe.sample_latents(cond, coords, g, steps=1, cfg=0)
pr.disable()
pstats.Stats(pr).sort_stats("tottime").print_stats(12)

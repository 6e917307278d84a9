import time, torch, cProfile, pstats, sys
from ss4d.data.dataset import ClipDataset
from ss4d.pipeline.video_to_4d import VideoTo4DPipeline
from ss4d.sparse import SparseTensor
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
pipe = VideoTo4DPipeline.from_pretrained(sys.argv[1])
ds = ClipDataset("datasets/assets_r32", num_frames=16, windows="first", views_per_frame=0, load_cond=False)
s = ds[3]
c = s["coords"].clone(); c2 = c.clone(); c2[:, 0] += 16
coords = torch.cat([c, c2]).int()
print("voxels/frame", coords.shape[0] / 32)
flow = pipe.models["slat_flow_model"]
x = SparseTensor(torch.randn(coords.shape[0], 8), coords, batch_size=32)
cond = torch.randn(32, 64, 128)
with torch.no_grad():
    flow(x, torch.full((32,), 500.0), cond, num_frames=32)
    pr = cProfile.Profile(); pr.enable()
    t = time.perf_counter(); flow(x, torch.full((32,), 500.0), cond, num_frames=32); print("fwd", time.perf_counter() - t)
    pr.disable()
pstats.Stats(pr).sort_stats("tottime").print_stats(14)

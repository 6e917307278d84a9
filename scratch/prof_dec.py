import time, torch, cProfile, pstats
from ss4d.data.dataset import ClipDataset
from ss4d.pipeline.video_to_4d import VideoTo4DPipeline
from ss4d.sparse import SparseTensor
torch.set_num_threads(2)
pipe = VideoTo4DPipeline.from_pretrained()
ds = ClipDataset("datasets/assets_r32", num_frames=16, windows="first", views_per_frame=0, load_cond=False)
s = ds[3]
c = s["coords"].clone(); c2 = c.clone(); c2[:, 0] += 16
coords = torch.cat([c, c2]).int()
slat = SparseTensor(torch.randn(coords.shape[0], 8), coords, batch_size=32)
pr = cProfile.Profile(); pr.enable()
t = time.perf_counter(); gs = pipe.decode(slat, 32); print("decode", time.perf_counter() - t)
pr.disable()
pstats.Stats(pr).sort_stats("tottime").print_stats(10)

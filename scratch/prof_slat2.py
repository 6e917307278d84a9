import time, torch, sys
from ss4d.data.dataset import ClipDataset
from ss4d.pipeline.video_to_4d import VideoTo4DPipeline
torch.set_num_threads(2)
pipe = VideoTo4DPipeline.from_pretrained()
ds = ClipDataset("datasets/assets_r32", num_frames=16, windows="first", views_per_frame=0, load_cond=False)
s = ds[3]
c = s["coords"].clone()
c2 = c.clone(); c2[:, 0] += 16
coords = torch.cat([c, c2]).int()
cond = torch.randn(32, 64, 128)
flow = pipe.models["slat_flow_model"]
for w in [None, 4, 2]:
    flow.window_size = w
    for i, b in enumerate(flow.blocks):
        a = b.self_attn
        a.attn_mode = "windowed" if w else "full"; a.window_size = w; a.shift_window = (w // 2) * (i % 2) if w else 0
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    slat = pipe.sample_latents(cond, coords, g, steps=1, cfg=0)
    print("window", w, "1 step", time.perf_counter() - t, flush=True)

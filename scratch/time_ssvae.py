import time, torch
from ss4d.models.tiny import build_tiny
m = build_tiny(names=["sparse_structure_encoder","sparse_structure_decoder"])
enc, dec = m["sparse_structure_encoder"], m["sparse_structure_decoder"]
opt = torch.optim.AdamW(list(enc.parameters())+list(dec.parameters()), 3e-4)
x = (torch.rand(4,1,32,32,32) > 0.9).float()
for i in range(4):
    t=time.time()
    z = enc(x, sample_posterior=False)
    t1=time.time()
    y = dec(z); t2=time.time()
    loss = y.sigmoid().mean(); loss.backward(); opt.step(); opt.zero_grad()
    print(f"enc {t1-t:.3f} dec {t2-t1:.3f} total {time.time()-t:.3f}", flush=True)
print(sum(p.numel() for p in enc.parameters()), sum(p.numel() for p in dec.parameters()))

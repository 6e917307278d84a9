"""Contact sheet PNG of a video's frames: python scratch/sheet.py VIDEO OUT.png [N]"""
import sys
import numpy as np
from PIL import Image
from ss4d.pipeline.video_io import read_frames
clip = read_frames(sys.argv[1])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 8
fr = clip.frames
idx = np.linspace(0, len(fr) - 1, n).round().astype(int)
ims = [np.asarray(fr[i])[..., :3] for i in idx]
rows = [np.concatenate(ims[i:i + 4], 1) for i in range(0, len(ims), 4)]
Image.fromarray(np.concatenate(rows, 0)).save(sys.argv[2])

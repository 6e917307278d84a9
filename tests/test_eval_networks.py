"""LPIPS / CLIP / I3D / FVD networks with random weights saved in the public key layouts (no pretrained weights)."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from ss4d.eval import find_weight_files
from ss4d.eval.clip_vit import (
    CLIP_MEAN,
    CLIP_STD,
    VIT_B_32,
    CLIPSimilarityMetric,
    CLIPVisionTransformer,
    clip_image_similarity,
    clip_preprocess,
    load_clip_visual,
    visual_config_from_state_dict,
)
from ss4d.eval.fvd import (
    FVDMetric,
    feature_statistics,
    frechet_distance,
    fvd_from_features,
    fvd_per_clip,
    fvd_pooled,
    fvd_preprocess,
)
from ss4d.eval.i3d import I3D_CHANNELS, MIXED_NAMES, InceptionI3d, load_i3d, scaled_channels
from ss4d.eval.lpips import LPIPS_SCALE, LPIPS_SHIFT, LPIPSMetric, load_lpips


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is as fast and avoids OpenMP stalls on a busy shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ====================================================================================================== LPIPS
# torchvision `features` layouts written out by hand: (index, cin, cout, kernel, stride, pad) of each conv,
# and the index of the ReLU after which LPIPS taps the activation
VGG_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
             (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]
VGG_POOLS_BEFORE = {5, 10, 17, 24}  # 2x2 max pool right before these convs
VGG_TAPS_AFTER = {2, 7, 14, 21, 28}  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
ALEX_CONVS = [(0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1), (8, 384, 256, 3, 1, 1),
              (10, 256, 256, 3, 1, 1)]


def _rand_trunk(net, g):
    sd = {}
    convs = VGG_CONVS if net == "vgg" else ALEX_CONVS
    for c in convs:
        i, cin, cout = c[:3]
        k = 3 if net == "vgg" else c[3]
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, k, k, generator=g) * math.sqrt(2.0 / (cin * k * k))
        sd[f"features.{i}.bias"] = 0.1 * torch.randn(cout, generator=g)
    sd["classifier.0.weight"] = torch.randn(8, 4, generator=g)  # ignored by the loader
    sd["classifier.0.bias"] = torch.randn(8, generator=g)
    return sd


def _rand_heads(net, g):
    ch = (64, 128, 256, 512, 512) if net == "vgg" else (64, 192, 384, 256, 256)
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(ch)}


def _lpips_reference(trunk, heads, net, x, y):
    """Straightforward LPIPS: F.conv2d with the saved tensors, one image pair at a time."""
    shift = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1)
    scale = torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)

    def feats(z):
        z = ((2 * z - 1) - shift) / scale
        out = []
        if net == "vgg":
            for i, _, _ in VGG_CONVS:
                if i in VGG_POOLS_BEFORE:
                    z = F.max_pool2d(z, 2, 2)
                z = F.relu(F.conv2d(z, trunk[f"features.{i}.weight"], trunk[f"features.{i}.bias"], padding=1))
                if i in VGG_TAPS_AFTER:
                    out.append(z)
        else:
            for i, _, _, _, s, p in ALEX_CONVS:
                if i in (3, 6):
                    z = F.max_pool2d(z, 3, 2)
                z = F.relu(F.conv2d(z, trunk[f"features.{i}.weight"], trunk[f"features.{i}.bias"], stride=s, padding=p))
                out.append(z)
        return out

    total = 0.0
    for k, (a, b) in enumerate(zip(feats(x), feats(y))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + (F.conv2d((a - b) ** 2, heads[f"lin{k}.model.1.weight"])).mean()
    return total


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    g = torch.Generator().manual_seed(0)
    out = {}
    for net in ("vgg", "alex"):
        trunk, heads = _rand_trunk(net, g), _rand_heads(net, g)
        torch.save(trunk, d / f"{net}_trunk.pth")
        torch.save(heads, d / f"{net}_lin.pth")
        out[net] = (d / f"{net}_trunk.pth", d / f"{net}_lin.pth", trunk, heads)
    return out


@pytest.mark.parametrize("net,size", [("vgg", 16), ("alex", 64)])
def test_lpips_load_and_reference(lpips_files, net, size):
    tpath, lpath, trunk, heads = lpips_files[net]
    model = load_lpips(tpath, lpath, net)
    sd = model.state_dict()
    assert set(sd) == {k for k in trunk if k.startswith("features.")} | set(heads)  # strict round trip
    for k, v in sd.items():
        assert torch.equal(v, (trunk | heads)[k]), k
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, size, size, generator=g)
    y = (x + 0.2 * torch.randn(2, 3, size, size, generator=g)).clamp(0, 1)
    with torch.no_grad():
        d = model(x, y)
        assert d.shape == (2,)
        assert torch.equal(model(x, x), torch.zeros(2))  # LPIPS(x, x) = 0
        torch.testing.assert_close(model(y, x), d)  # symmetric
        for i in range(2):
            ref = _lpips_reference(trunk, heads, net, x[i:i + 1], y[i:i + 1])
            torch.testing.assert_close(d[i], ref, rtol=1e-4, atol=1e-6)
    assert (d > 0).all()


def test_lpips_metric_not_computed_and_bad_layout(lpips_files, tmp_path):
    tpath, lpath, trunk, heads = lpips_files["alex"]
    x = torch.rand(2, 3, 64, 64)
    for m in (LPIPSMetric(None, None, "alex"), LPIPSMetric(tmp_path / "missing.pth", lpath, "alex"),
              LPIPSMetric(tpath, None, "alex")):
        value, reason = m(x, x)
        assert value is None and reason and not m.available
    bad = {k.replace("features.", "net.slice1."): v for k, v in trunk.items()}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="features"):
        load_lpips(tmp_path / "bad.pth", lpath, "alex")
    value, reason = LPIPSMetric(tmp_path / "bad.pth", lpath, "alex")(x, x)
    assert value is None and "features" in reason
    torch.save({k: v[:, :-1] for k, v in heads.items()}, tmp_path / "badlin.pth")
    with pytest.raises(RuntimeError, match="shape"):
        load_lpips(tpath, tmp_path / "badlin.pth", "alex")
    with pytest.raises(RuntimeError, match="features"):  # an AlexNet trunk is not a VGG16 trunk
        load_lpips(tpath, lpath, "vgg")
    m = LPIPSMetric(tpath, lpath, "alex", batch_size=1)
    res = m(x.view(1, 2, 3, 64, 64), torch.rand(1, 2, 3, 64, 64))
    assert res.computed and res.value.shape == (1, 2)


def test_find_weight_files(tmp_path):
    (tmp_path / "vgg.pth").write_bytes(b"")
    found = find_weight_files(tmp_path)
    assert found["lpips_vgg_lin"] == tmp_path / "vgg.pth" and found["i3d"] is None
    assert all(v is None for v in find_weight_files(None).values())


# ====================================================================================================== CLIP
TINY_CLIP = dict(input_resolution=32, patch_size=8, width=64, layers=2, output_dim=16)


def _clip_reference(sd, x, heads):
    """OpenAI's formulation with torch.nn.MultiheadAttention in LND layout, from the saved tensors."""
    p = "visual."
    w = sd[p + "conv1.weight"]
    D = w.shape[0]
    x = F.conv2d(x, w, stride=w.shape[-1]).reshape(x.shape[0], D, -1).permute(0, 2, 1)
    x = torch.cat([sd[p + "class_embedding"].expand(x.shape[0], 1, D), x], 1) + sd[p + "positional_embedding"]
    x = F.layer_norm(x, (D,), sd[p + "ln_pre.weight"], sd[p + "ln_pre.bias"]).permute(1, 0, 2)
    i = 0
    while f"{p}transformer.resblocks.{i}.ln_1.weight" in sd:
        b = f"{p}transformer.resblocks.{i}."
        mha = nn.MultiheadAttention(D, heads)
        mha.load_state_dict({k: sd[b + "attn." + k]
                             for k in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")})
        h = F.layer_norm(x, (D,), sd[b + "ln_1.weight"], sd[b + "ln_1.bias"])
        x = x + mha(h, h, h, need_weights=False)[0]
        h = F.layer_norm(x, (D,), sd[b + "ln_2.weight"], sd[b + "ln_2.bias"])
        h = F.linear(h, sd[b + "mlp.c_fc.weight"], sd[b + "mlp.c_fc.bias"])
        x = x + F.linear(h * torch.sigmoid(1.702 * h), sd[b + "mlp.c_proj.weight"], sd[b + "mlp.c_proj.bias"])
        i += 1
    x = x.permute(1, 0, 2)
    return F.layer_norm(x[:, 0], (D,), sd[p + "ln_post.weight"], sd[p + "ln_post.bias"]) @ sd[p + "proj"]


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    torch.manual_seed(0)
    m = CLIPVisionTransformer(**TINY_CLIP, heads=2)
    sd = {k: v + 0.05 * torch.randn_like(v) for k, v in m.state_dict().items()}  # non-trivial LN / biases
    full = dict(sd)
    full.update({"token_embedding.weight": torch.randn(10, 8), "logit_scale": torch.tensor(4.6),
                 "input_resolution": torch.tensor(32), "text_projection": torch.randn(8, 16)})
    path = tmp_path_factory.mktemp("clip") / "clip_tiny.pth"
    torch.save(full, path)
    return path, sd


def test_clip_load_round_trip_and_reference(clip_file):
    path, sd = clip_file
    model = load_clip_visual(path, heads=2)
    assert model.config == dict(TINY_CLIP, heads=2)
    msd = model.state_dict()
    assert set(msd) == set(sd) and all(torch.equal(msd[k], sd[k]) for k in sd)
    assert load_clip_visual(path).config["heads"] == 1  # OpenAI rule: width // 64
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _clip_reference(sd, x, heads=2), rtol=1e-4, atol=1e-5)


def test_clip_preprocess_and_similarity(clip_file):
    path, _ = clip_file
    model = load_clip_visual(path)
    img = torch.rand(1, 3, 40, 60)
    pre = clip_preprocess(img, 32)
    assert pre.shape == (1, 3, 32, 32)
    # shorter side 40 -> 32, longer 60 -> 48, centre crop columns 8..40
    ref = F.interpolate(img, size=(32, 48), mode="bicubic", align_corners=False, antialias=True)[..., 8:40]
    ref = (ref.clamp(0, 1) - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(pre, ref)
    a, b = torch.rand(2, 3, 3, 48, 48), torch.rand(2, 3, 3, 48, 48)
    s = clip_image_similarity(model, a, b)
    assert s.shape == (2, 3) and (s.abs() <= 1 + 1e-6).all()
    torch.testing.assert_close(clip_image_similarity(model, a, a), torch.ones(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(clip_image_similarity(model, b, a), s)
    res = CLIPSimilarityMetric(path)(a, b)
    assert res.computed and torch.allclose(res.value.float(), s)
    value, reason = CLIPSimilarityMetric(None)(a, b)
    assert value is None and "CLIP" in reason


def test_clip_vit_b32_layout():
    with torch.device("meta"):
        sd = CLIPVisionTransformer(**VIT_B_32).state_dict()
    assert visual_config_from_state_dict(sd) == VIT_B_32
    assert sum(v.numel() for v in sd.values()) == 87_849_216  # OpenAI ViT-B/32 image tower
    assert tuple(sd["visual.positional_embedding"].shape) == (50, 768)
    assert tuple(sd["visual.transformer.resblocks.11.attn.in_proj_weight"].shape) == (2304, 768)
    assert tuple(sd["visual.transformer.resblocks.11.mlp.c_fc.weight"].shape) == (3072, 768)
    assert tuple(sd["visual.proj"].shape) == (768, 512) and len(sd) == 4 + 2 + 12 * 12 + 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.* deprecation notices
def test_clip_torchscript_only_behind_flag(clip_file, tmp_path):
    path, sd = clip_file
    model = load_clip_visual(path)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = model.visual

        def forward(self, x):
            return self.visual(x)

    ts = tmp_path / "ViT-tiny.pt"
    torch.jit.save(torch.jit.trace(Wrap(), torch.randn(1, 3, 32, 32)), str(ts))
    with pytest.raises(RuntimeError, match="TorchScript"):
        load_clip_visual(ts)
    value, reason = CLIPSimilarityMetric(ts)(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    assert value is None and "TorchScript" in reason
    m2 = load_clip_visual(ts, allow_torchscript=True)
    assert all(torch.equal(m2.state_dict()[k], v) for k, v in model.state_dict().items())


# ====================================================================================================== I3D
def _piergiaj_keys():
    """The pytorch-i3d InceptionI3d state-dict keys, enumerated by hand."""
    unit = ["conv3d.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    keys = [f"{n}.{u}" for n in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3") for u in unit]
    keys += [f"{m}.{b}.{u}" for m in MIXED_NAMES for b in ("b0", "b1a", "b1b", "b2a", "b2b", "b3b") for u in unit]
    return set(keys) | {"logits.conv3d.weight", "logits.conv3d.bias"}


def test_i3d_full_layout():
    sd = InceptionI3d().state_dict()
    assert set(sd) == _piergiaj_keys()
    shapes = {"Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7), "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
              "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3), "Mixed_4b.b0.conv3d.weight": (192, 480, 1, 1, 1),
              "Mixed_5b.b3b.conv3d.weight": (128, 832, 1, 1, 1), "Mixed_5c.b0.bn.running_var": (384,),
              "logits.conv3d.weight": (400, 1024, 1, 1, 1), "logits.conv3d.bias": (400,)}
    for k, s in shapes.items():
        assert tuple(sd[k].shape) == s, k
    assert sum(v.numel() for k, v in sd.items() if "num_batches" not in k) == 12_711_881 - 57
    assert I3D_CHANNELS["Mixed_5c"] == (384, 192, 384, 48, 128, 128)


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    torch.manual_seed(0)
    m = InceptionI3d(num_classes=10, channels=scaled_channels(16))
    sd = {}
    for k, v in m.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue  # old checkpoints have none; the loader fills them in
        if k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand_like(v)
        elif k.endswith("running_mean") or k.endswith("bn.bias"):
            sd[k] = 0.1 * torch.randn_like(v)
        elif k.endswith("bn.weight"):
            sd[k] = 1 + 0.1 * torch.randn_like(v)
        else:
            sd[k] = v.clone()
    path = tmp_path_factory.mktemp("i3d") / "i3d_tiny.pt"
    torch.save(sd, path)
    return path, sd


def test_i3d_load_round_trip_and_shapes(i3d_file, tmp_path):
    path, sd = i3d_file
    model = load_i3d(path)
    assert model.num_classes == 10 and model.channels == scaled_channels(16)
    msd = model.state_dict()
    assert set(msd) == _piergiaj_keys() and all(torch.equal(msd[k], v) for k, v in sd.items())
    x = torch.rand(2, 3, 9, 33, 30) * 2 - 1
    with torch.no_grad():
        y = model(x)
        f = model.extract_features(x)
    assert y.shape == (2, 10) and f.shape == (2, model.feature_dim) and torch.isfinite(y).all()
    assert model.feature_dim == sum(scaled_channels(16)["Mixed_5c"][i] for i in (0, 2, 4, 5))
    # logits = 1x1x1 conv of the pooled features (mean over positions commutes with the linear head)
    w = sd["logits.conv3d.weight"].flatten(1)
    torch.testing.assert_close(y, f @ w.T + sd["logits.conv3d.bias"], rtol=1e-4, atol=1e-5)
    save_file(sd, str(tmp_path / "i3d.safetensors"))
    m2 = load_i3d(tmp_path / "i3d.safetensors")
    assert all(torch.equal(m2.state_dict()[k], v) for k, v in sd.items())
    bad = dict(sd)
    bad.pop("Mixed_4c.b2b.bn.running_mean")
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(RuntimeError, match="Mixed_4c.b2b.bn.running_mean"):
        load_i3d(tmp_path / "bad.pt")


def test_i3d_same_padding_stem():
    torch.manual_seed(0)
    m = InceptionI3d(channels=scaled_channels(16), num_classes=3)
    x = torch.randn(1, 3, 5, 11, 12)
    unit = m.Conv3d_1a_7x7
    # TF SAME, stride 2: out = ceil(n / 2), total pad = max(7 - (n % 2 or 2), 0), front = total // 2
    ref = x
    pads = []
    for n in (12, 11, 5):  # W, H, T order for F.pad
        tot = max(7 - (n % 2 if n % 2 else 2), 0)
        pads += [tot // 2, tot - tot // 2]
    ref = F.relu(unit.bn(F.conv3d(F.pad(x, pads), unit.conv3d.weight, stride=2)))
    with torch.no_grad():
        out = unit(x)
    assert out.shape[-3:] == (3, 6, 6)
    torch.testing.assert_close(out, ref)


# ====================================================================================================== FVD
def test_frechet_diagonal_closed_form():
    g = np.random.default_rng(0)
    mu1, mu2 = g.normal(size=6), g.normal(size=6)
    s1, s2 = g.uniform(0.1, 2, 6), g.uniform(0.1, 2, 6)
    ref = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(ref, rel=1e-10)
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0, abs=1e-10)
    assert frechet_distance([1.0], [[4.0]], [0.0], [[1.0]]) == pytest.approx(1 + 4 + 1 - 2 * 2)


def _fd_eig(mu1, s1, mu2, s2):
    """Independent: tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)) with symmetric eigendecompositions."""
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    e = np.linalg.eigvalsh(r @ s2 @ r)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(e, 0, None))))


@pytest.mark.parametrize("n", [50, 6])  # full rank, and rank-deficient (6 samples in 16 dims)
def test_frechet_full_covariance_vs_eigen(n):
    g = np.random.default_rng(n)
    a = g.normal(size=(n, 16)) @ g.normal(size=(16, 16))
    b = g.normal(size=(n, 16)) * 1.5 + 0.3
    stats_a, stats_b = feature_statistics(a), feature_statistics(b)
    ref = _fd_eig(*stats_a, *stats_b)
    assert fvd_from_features(a, b) == pytest.approx(ref, rel=1e-4)
    np.testing.assert_allclose(stats_a[1], np.cov(a, rowvar=False))


def test_fvd_per_clip_degenerate_and_pooled():
    g = torch.Generator().manual_seed(0)
    fp = [torch.randn(1, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    fg = [torch.randn(1, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    per = fvd_per_clip(fp, fg)
    ref = np.array([float(((p - q) ** 2).sum()) for p, q in zip(fp, fg)])  # one video per side: |f1 - f2|^2
    np.testing.assert_allclose(per, ref, rtol=1e-10)
    pooled = fvd_pooled(fp, fg)
    assert pooled == pytest.approx(fvd_from_features(torch.cat(fp), torch.cat(fg)))
    assert fvd_pooled(fp, fp) == pytest.approx(0, abs=1e-6)


def test_fvd_preprocess():
    v = torch.rand(2, 4, 3, 20, 30)
    x = fvd_preprocess(v, 16)
    assert x.shape == (2, 3, 4, 16, 16) and x.min() >= -1 and x.max() <= 1
    ref = F.interpolate(v[1].reshape(4, 3, 20, 30), size=(16, 24), mode="bilinear", align_corners=False)[..., 4:20]
    torch.testing.assert_close(x[1].permute(1, 0, 2, 3), ref * 2 - 1)


def test_fvd_metric(i3d_file, tmp_path):
    path, _ = i3d_file
    g = torch.Generator().manual_seed(2)
    pred = [torch.rand(2, 8, 3, 24, 24, generator=g) for _ in range(2)]
    gt = [torch.rand(2, 8, 3, 24, 24, generator=g) for _ in range(2)]
    for m in (FVDMetric(None), FVDMetric(tmp_path / "nope.pt")):
        out = m(pred, gt)
        assert set(out) == {"per_clip", "per_clip_mean", "pooled"}
        assert all(not r.computed and "FVD" in r.reason for r in out.values())
    m = FVDMetric(path, resolution=32)
    out = m(pred, gt)
    assert out["per_clip"].value.shape == (2,) and np.isfinite(out["pooled"].value)
    assert out["per_clip_mean"].value == pytest.approx(out["per_clip"].value.mean())
    same = m(pred, pred)
    assert same["pooled"].value == pytest.approx(0, abs=1e-6)
    np.testing.assert_allclose(same["per_clip"].value, 0, atol=1e-6)
    assert m.features(pred[0]).shape == (2, 10)
    assert FVDMetric(path, resolution=32, features="pool").features(pred[0]).shape == (2, m.model.feature_dim)

"""EfficientNet-Lite0 conditioning encoder: architecture, TF-SAME padding, real ImageNet weights (when installed)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ss4d.models.image_encoders import EfficientNetLite, EfficientNetLiteConditioner, load_efficientnet_lite_weights
from ss4d.models.image_encoders.efficientnet import (
    Conv2dSame,
    efficientnet_lite0,
    efficientnet_lite0_weights_path,
)

STAGE_SHAPES = [(16, 112), (24, 56), (40, 28), (80, 14), (112, 14), (192, 7), (320, 7), (1280, 7)]


def _weights_or_skip():
    try:
        return efficientnet_lite0_weights_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def pretrained():
    return efficientnet_lite0(_weights_or_skip())


def _random_model(seed=0):
    torch.manual_seed(seed)
    m = EfficientNetLite("lite0")
    with torch.no_grad():
        for name, b in m.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.1)
    return m.eval()


def test_architecture_shapes_random_weights():
    m = _random_model()
    assert len(m._blocks) == 16
    n_tensors = len(m.state_dict())
    assert n_tensors == 296  # the packaged checkpoint's tensor count, num_batches_tracked included
    assert sum(p.numel() for p in m.parameters()) == 4_652_008
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        outs = m.forward_stages(x)
        logits = m._fc(outs[-1].mean(dim=(2, 3)))
    assert [(o.shape[1], o.shape[2]) for o in outs] == STAGE_SHAPES
    assert logits.shape == (1, 1000)
    with torch.no_grad():
        assert len(m.forward_stages(x, upto=2)) == 3


@pytest.mark.parametrize("stage,channels,tokens", [("stage5", 112, 196), ("stage6", 192, 49), ("head", 1280, 49)])
def test_conditioner_tokens_random_weights(stage, channels, tokens):
    c = EfficientNetLiteConditioner(stage=stage, weights=None, model=_random_model())
    imgs = torch.rand(2, 3, 100, 120)  # resized to 224
    out = c(imgs)
    assert out.shape == (2, tokens, channels) == (2, c.num_tokens, c.out_channels)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, tokens), atol=1e-4, rtol=0)
    g = EfficientNetLiteConditioner(stage=stage, weights=None, model=c.model, global_token=True)
    assert g(imgs[:1]).shape == (1, tokens + 1, channels)
    c.train()
    assert not c.model.training  # BatchNorm statistics stay frozen


def test_tf_same_padding():
    conv = Conv2dSame(1, 1, 3, stride=2)
    with torch.no_grad():
        conv.weight.normal_()
    x = torch.randn(1, 1, 10, 9)
    y = conv(x)
    assert y.shape[-2:] == (5, 5)  # ceil(in / stride)
    # even size, stride 2, k=3: total padding 1, all of it after (bottom / right); odd size: 1 before and 1 after
    ref = F.conv2d(F.pad(x, (1, 1, 0, 1)), conv.weight, None, 2)
    torch.testing.assert_close(y, ref)
    conv5 = Conv2dSame(1, 1, 5, stride=1)
    assert conv5(x).shape[-2:] == (10, 9)


def test_pretrained_loads_strictly_and_features_are_sane(pretrained):
    sd = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    assert list(sd.keys()) == list(pretrained.state_dict().keys())
    torch.manual_seed(0)
    # smooth random "natural-ish" images: low-frequency noise up-sampled
    imgs = F.interpolate(torch.rand(4, 3, 14, 14), size=(224, 224), mode="bicubic", align_corners=False).clamp(0, 1)
    c = EfficientNetLiteConditioner(stage="head", weights=None, model=pretrained, layer_norm=False)
    feats = c(imgs)
    assert torch.isfinite(feats).all()
    assert (feats >= 0).all() and (feats <= 6).all()  # ReLU6 range
    active = (feats > 0).float().mean()
    assert 0.05 < active < 0.95  # BN statistics give non-degenerate activations
    assert feats.std() > 0.1
    # different images -> different features
    assert (feats[0] - feats[1]).abs().mean() > 0.05 * feats.abs().mean()


def test_pretrained_recognises_blue_jay(pretrained, shared):
    from PIL import Image

    clip = shared / "data" / "clips" / "pecking_blue_jay"
    if not clip.is_dir():
        pytest.skip("pecking_blue_jay clip missing")
    frames = []
    for i in (0, 8, 16, 24, 31):
        rgba = np.asarray(Image.open(clip / f"{i}.png").convert("RGBA")).astype(np.float32) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])  # white background
        frames.append(torch.from_numpy(rgb).permute(2, 0, 1))
    c = EfficientNetLiteConditioner(stage="head", weights=None, model=pretrained)
    x = c.preprocess(torch.stack(frames))
    with torch.no_grad():
        probs = pretrained(x).softmax(-1)
    jay = 17  # ImageNet class 17 = "jay" (blue jay)
    assert (probs.argmax(-1) == jay).all(), probs.topk(3)
    assert probs[:, jay].mean() > 0.3


def test_loader_errors(tmp_path):
    m = _random_model()
    p = tmp_path / "w.pth"
    sd = m.state_dict()
    sd.pop("_fc.bias")
    torch.save(sd, p)
    with pytest.raises(RuntimeError, match="_fc.bias"):
        load_efficientnet_lite_weights(_random_model(1), p)
    torch.save(m.state_dict(), p)
    m2 = load_efficientnet_lite_weights(_random_model(1), p)
    torch.testing.assert_close(m2._fc.weight, m._fc.weight)
    bad = tmp_path / "efficientnet-lite0-57934424.pth"  # packaged name: checksum verified
    bad.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(RuntimeError, match="corrupt"):
        load_efficientnet_lite_weights(_random_model(), bad)
    with pytest.raises(FileNotFoundError):
        load_efficientnet_lite_weights(_random_model(), tmp_path / "missing.pth")

"""Attention vs dense masked softmax attention in float64, with masks built from the spec's definitions
(spec §2.1, §2.2, §2.8, §2.10, §5): varlen groups, cross-frame swin windows, per-sample temporal attention,
sparse cross-attention, dense frame windows with shift; temporal RoPE (adjacent pairs), APE (sin first) and
QK RMS-norm against hand-written formulas."""
from __future__ import annotations

import math

import pytest
import torch

from ss4d.nn.attention import MultiHeadAttention
from ss4d.nn.embed import absolute_position_embedding, apply_rope, rope_1d_phases
from ss4d.nn.norm import MultiHeadRMSNorm
from ss4d.sparse import SparseTensor
from ss4d.sparse import attention as sattn


def assert_rel(actual, expected, tol=1e-5):
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * max(scale, 1e-12))


# ----------------------------------------------------------------------------------------------------------------
# independent float64 references

def ref_attention(q, k, v, allowed):
    """softmax(q k^T / sqrt(D) masked to `allowed` [Nq, Nk]) v; q [Nq, H, D], k/v [Nk, H, D]."""
    q, k, v = q.double(), k.double(), v.double()
    s = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~allowed[None], float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), v)


def ref_rope(x, pos, base=10000.0):
    """Rotate channel pairs (2j, 2j+1) by pos * base^(-j/(D/2)); x [N, ..., D], pos [N]."""
    x = x.double()
    half = x.shape[-1] // 2
    theta = base ** (-torch.arange(half, dtype=torch.float64) / half)
    ang = pos.double().view(-1, *([1] * (x.dim() - 2)), 1) * theta
    c, s = torch.cos(ang), torch.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def ref_rms(x, gamma):
    x = x.double()
    return x / x.norm(dim=-1, keepdim=True) * gamma.double() * math.sqrt(x.shape[-1])


def ref_self_attention_module(m: MultiHeadAttention, feats, allowed, pos=None):
    """Official sparse/dense self-attention dataflow on flattened tokens feats [N, C] (float64)."""
    h, d = m.num_heads, m.head_dim
    x = feats.double()
    qkv = x @ m.to_qkv.weight.double().t() + m.to_qkv.bias.double()
    q, k, v = qkv.view(-1, 3, h, d).unbind(1)
    if pos is not None:
        q, k = ref_rope(q, pos, m.rope_base), ref_rope(k, pos, m.rope_base)
    if m.qk_rms_norm:
        q, k = ref_rms(q, m.q_rms_norm.gamma), ref_rms(k, m.k_rms_norm.gamma)
    o = ref_attention(q, k, v, allowed).reshape(x.shape[0], -1)
    return o @ m.to_out.weight.double().t() + m.to_out.bias.double()


def ref_cross_attention_module(m: MultiHeadAttention, feats, ctx, allowed):
    h, d = m.num_heads, m.head_dim
    q = (feats.double() @ m.to_q.weight.double().t() + m.to_q.bias.double()).view(-1, h, d)
    kv = ctx.double() @ m.to_kv.weight.double().t() + m.to_kv.bias.double()
    k, v = kv.view(-1, 2, h, d).unbind(1)
    if m.qk_rms_norm:
        q, k = ref_rms(q, m.q_rms_norm.gamma), ref_rms(k, m.k_rms_norm.gamma)
    o = ref_attention(q, k, v, allowed).reshape(feats.shape[0], -1)
    return o @ m.to_out.weight.double().t() + m.to_out.bias.double()


def randomise(m: torch.nn.Module, seed: int):
    """Random weights and biases; RMS-norm gammas around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if name.endswith("gamma") else 0.0))
    return m.eval()


def sparse_input(num_frames, samples, res, density, ch, seed):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(num_frames * samples):
        xyz = (torch.rand(res, res, res, generator=g) < density).nonzero()
        xyz = xyz[torch.randperm(xyz.shape[0], generator=g)]
        rows.append(torch.cat([torch.full((xyz.shape[0], 1), b, dtype=torch.long), xyz], 1))
    coords = torch.cat(rows).int()
    return SparseTensor(torch.randn(coords.shape[0], ch, generator=g), coords, num_frames * samples)


# ----------------------------------------------------------------------------------------------------------------
# varlen core

def _group_ids(lens):
    return torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))


@pytest.mark.parametrize("pad_budget", [None, 4096])
def test_varlen_mixed_tiny_and_large_groups(monkeypatch, pad_budget):
    if pad_budget is not None:  # force many padded batches
        monkeypatch.setattr(sattn, "PAD_BUDGET", pad_budget)
    g = torch.Generator().manual_seed(0)
    big = sattn.LARGE_GROUP + 37
    lens = [1, 3, big, 0, 7, 2, 50, sattn.LARGE_GROUP, 1, 16]
    n = sum(lens)
    q, k, v = (torch.randn(n, 2, 8, generator=g) for _ in range(3))
    out = sattn.varlen_attention(q, k, v, torch.tensor(lens))
    gid = _group_ids(lens)
    assert_rel(out, ref_attention(q, k, v, gid[:, None] == gid[None]))


def test_varlen_cross_lengths_and_uniform_groups():
    g = torch.Generator().manual_seed(1)
    q_lens, kv_lens = [5, 0, 1030, 3, 1], [7, 4, 20, 1100, 2]
    q = torch.randn(sum(q_lens), 3, 4, generator=g)
    k, v = (torch.randn(sum(kv_lens), 3, 4, generator=g) for _ in range(2))
    out = sattn.varlen_attention(q, k, v, q_lens, kv_lens)
    qi, ki = _group_ids(q_lens), _group_ids(kv_lens)
    assert_rel(out, ref_attention(q, k, v, qi[:, None] == ki[None]))
    # uniform groups (one batched call), small and large
    for lens in ([16] * 9, [1100, 1100]):
        q, k, v = (torch.randn(sum(lens), 2, 8, generator=g) for _ in range(3))
        gid = _group_ids(lens)
        assert_rel(sattn.varlen_attention(q, k, v, lens), ref_attention(q, k, v, gid[:, None] == gid[None]))
    # a query group with no keys gets zeros (no NaN), the other groups are unaffected
    q, k, v = torch.randn(5, 2, 4, generator=g), torch.randn(4, 2, 4, generator=g), torch.randn(4, 2, 4, generator=g)
    out = sattn.varlen_attention(q, k, v, [2, 3], [0, 4])
    assert torch.equal(out[:2], torch.zeros(2, 2, 4))
    assert_rel(out[2:], ref_attention(q[2:], k, v, torch.ones(3, 4, dtype=torch.bool)))
    with pytest.raises(ValueError, match="sum"):
        sattn.varlen_attention(q, k, v, [3])
    with pytest.raises(ValueError, match="length"):
        sattn.varlen_attention(q, k, v, lens, [sum(lens)])


def test_varlen_backward_matches_reference():
    g = torch.Generator().manual_seed(2)
    lens = [3, 40, 1, 9]
    q, k, v = (torch.randn(sum(lens), 2, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    gid = _group_ids(lens)
    go = torch.randn(sum(lens), 2, 4, generator=g, dtype=torch.float64)
    gr1 = torch.autograd.grad((sattn.varlen_attention(q, k, v, lens) * go).sum(), (q, k, v))
    gr2 = torch.autograd.grad((ref_attention(q, k, v, gid[:, None] == gid[None]) * go).sum(), (q, k, v))
    for a, b in zip(gr1, gr2):
        assert_rel(a, b, 1e-9)


def test_group_by_keys_stable():
    keys = torch.tensor([[1, 0], [0, 2], [1, 0], [0, 2], [0, 1]])
    perm, lens = sattn.group_by_keys(keys)
    assert perm.tolist() == [4, 1, 3, 0, 2] and lens.tolist() == [1, 2, 2]
    perm, lens = sattn.group_by_keys(torch.tensor([3, 1, 3, 2, 1]))
    assert perm.tolist() == [1, 4, 3, 0, 2] and lens.tolist() == [2, 1, 2]


# ----------------------------------------------------------------------------------------------------------------
# sparse module paths

@pytest.mark.parametrize("shift", [0, 2])
def test_sparse_swin_cross_frame_windows(shift):
    """Decoder swin: key ((b+s)//w + b//T, (x+s)//w, (y+s)//w, (z+s)//w), RoPE on b % T, RMS-norm after RoPE."""
    w, num_frames, samples = 4, 4, 2
    m = randomise(MultiHeadAttention(32, 4, type="temporal", attn_mode="swin", window_size=w, shift_window=shift,
                                     use_rope_t=True, qk_rms_norm=True), 10 + shift)
    x = sparse_input(num_frames, samples, 9, 0.12, 32, seed=3)
    with torch.no_grad():
        y = m(x, num_frames=num_frames)
    c = x.coords.long()
    b = c[:, 0]
    key = torch.stack([(b + shift) // w + b // num_frames, *[(c[:, i] + shift) // w for i in (1, 2, 3)]], 1)
    allowed = (key[:, None] == key[None]).all(-1)
    assert allowed.sum(1).min() >= 1 and allowed.float().mean() < 0.2  # many windows
    ref = ref_self_attention_module(m, x.feats, allowed, pos=b % num_frames)
    assert torch.equal(y.coords, x.coords)
    assert_rel(y.feats, ref)


def test_sparse_swin_spatial_windows():
    m = randomise(MultiHeadAttention(16, 2, type="self", attn_mode="swin", window_size=4, shift_window=2), 20)
    x = sparse_input(1, 3, 9, 0.15, 16, seed=4)
    with torch.no_grad():
        y = m(x)
    c = x.coords.long()
    key = torch.stack([c[:, 0], *[(c[:, i] + 2) // 4 for i in (1, 2, 3)]], 1)
    assert_rel(y.feats, ref_self_attention_module(m, x.feats, (key[:, None] == key[None]).all(-1)))


def test_sparse_temporal_full_per_sample():
    """SLat flow: one attention over all voxels of all frames of a sample, RoPE position = frame index."""
    num_frames, samples = 3, 2
    m = randomise(MultiHeadAttention(32, 2, type="temporal", attn_mode="full", use_rope_t=True, qk_rms_norm=True,
                                     rope_base=100.0), 30)
    x = sparse_input(num_frames, samples, 7, 0.15, 32, seed=5)
    with torch.no_grad():
        y = m(x, num_frames=num_frames)
    b = x.coords[:, 0].long()
    s = b // num_frames
    assert_rel(y.feats, ref_self_attention_module(m, x.feats, s[:, None] == s[None], pos=b % num_frames))


@pytest.mark.parametrize("window,shift", [(2, 0), (2, 1), (3, 1)])
def test_sparse_temporal_frame_windows(window, shift):
    """SLat flow with window_size (ss4d extension): voxels of frames with equal (f + s)//w of one sample."""
    num_frames, samples = 5, 2
    m = randomise(MultiHeadAttention(32, 2, type="temporal", attn_mode="windowed", window_size=window,
                                     shift_window=shift, use_rope_t=True, qk_rms_norm=True), 32)
    x = sparse_input(num_frames, samples, 6, 0.2, 32, seed=11)
    with torch.no_grad():
        y = m(x, num_frames=num_frames)
    b = x.coords[:, 0].long()
    s, f = b // num_frames, b % num_frames
    wid = (f + shift) // window
    allowed = (s[:, None] == s[None]) & (wid[:, None] == wid[None])
    assert allowed.float().mean() < 0.5
    assert_rel(y.feats, ref_self_attention_module(m, x.feats, allowed, pos=f))


def test_sparse_self_full_per_entry():
    m = randomise(MultiHeadAttention(16, 2, type="self", attn_mode="full"), 31)
    x = sparse_input(1, 4, 6, 0.2, 16, seed=6)
    with torch.no_grad():
        y = m(x)
    b = x.coords[:, 0].long()
    assert_rel(y.feats, ref_self_attention_module(m, x.feats, b[:, None] == b[None]))


def test_sparse_cross_attention():
    m = randomise(MultiHeadAttention(16, 2, ctx_channels=12, type="cross", qk_rms_norm=True), 40)
    x = sparse_input(1, 3, 6, 0.2, 16, seed=7)
    g = torch.Generator().manual_seed(8)
    ctx = torch.randn(3, 11, 12, generator=g)
    with torch.no_grad():
        y = m(x, ctx)
    b = x.coords[:, 0].long()
    cb = torch.arange(3).repeat_interleave(11)
    ref = ref_cross_attention_module(m, x.feats, ctx.reshape(-1, 12), b[:, None] == cb[None])
    assert_rel(y.feats, ref)
    with pytest.raises(ValueError, match="entries"):
        m(x, ctx[:2])


# ----------------------------------------------------------------------------------------------------------------
# dense module paths

@pytest.mark.parametrize("window,shift", [(2, 0), (2, 1), (3, 1), (None, 0)])
def test_dense_temporal_frame_windows(window, shift):
    """SS flow: window id (f + s)//w per frame, all L tokens of those frames, never across samples."""
    num_frames, samples, seq, ch = 5, 2, 6, 16
    m = randomise(MultiHeadAttention(ch, 2, type="temporal", attn_mode="windowed" if window else "full",
                                     window_size=window, shift_window=shift, use_rope_t=True, qk_rms_norm=True), 50)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(samples * num_frames, seq, ch, generator=g)
    with torch.no_grad():
        y = m(x, num_frames=num_frames)
    row = torch.arange(samples * num_frames * seq)
    f = row // seq % num_frames
    s = row // (seq * num_frames)
    wid = (f + shift) // window if window else torch.zeros_like(f)
    allowed = (s[:, None] == s[None]) & (wid[:, None] == wid[None])
    ref = ref_self_attention_module(m, x.reshape(-1, ch), allowed, pos=f)
    assert_rel(y.reshape(-1, ch), ref)


def test_dense_self_and_cross():
    m = randomise(MultiHeadAttention(16, 2, type="self", qk_rms_norm=True), 60)
    g = torch.Generator().manual_seed(10)
    x = torch.randn(3, 5, 16, generator=g)
    with torch.no_grad():
        y = m(x)
    fr = torch.arange(15) // 5
    assert_rel(y.reshape(-1, 16), ref_self_attention_module(m, x.reshape(-1, 16), fr[:, None] == fr[None]))
    mc = randomise(MultiHeadAttention(16, 2, ctx_channels=8, type="cross"), 61)
    ctx = torch.randn(3, 4, 8, generator=g)
    with torch.no_grad():
        y = mc(x, ctx)
    cf = torch.arange(12) // 4
    assert_rel(y.reshape(-1, 16), ref_cross_attention_module(mc, x.reshape(-1, 16), ctx.reshape(-1, 8),
                                                             fr[:, None] == cf[None]))


# ----------------------------------------------------------------------------------------------------------------
# embeddings and norms

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_adjacent_pairs(dtype):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(6, 3, 16, generator=g).to(dtype)
    pos = torch.tensor([0, 1, 2, 5, 7, 3])
    out = apply_rope(x, rope_1d_phases(pos, 16, 10000.0)[:, None])
    assert out.dtype == dtype
    ref = ref_rope(x.float(), pos)
    if dtype == torch.float32:
        assert_rel(out, ref)
    else:
        assert (out.double() - ref).abs().max() < 3e-2
    # position 0 is the identity; pairs are adjacent channels, not halves
    assert torch.equal(out[0], x[0])
    e = torch.zeros(1, 1, 4)
    e[..., 0] = 1.0
    r = apply_rope(e, rope_1d_phases(torch.tensor([1]), 4, 10000.0)[:, None])
    torch.testing.assert_close(r.flatten(), torch.tensor([math.cos(1.0), math.sin(1.0), 0.0, 0.0]))


@pytest.mark.parametrize("channels", [48, 50, 1024])
def test_ape_sin_first(channels):
    g = torch.Generator().manual_seed(12)
    coords = torch.randint(0, 64, (7, 3), generator=g)
    out = absolute_position_embedding(coords, channels)
    fd = channels // 3 // 2
    freqs = 1.0 / 10000 ** (torch.arange(fd, dtype=torch.float64) / fd)
    parts = []
    for a in range(3):
        ang = coords[:, a, None].double() * freqs
        parts += [torch.sin(ang), torch.cos(ang)]
    ref = torch.cat(parts, 1)
    ref = torch.cat([ref, ref.new_zeros(7, channels - ref.shape[1])], 1)
    assert out.shape == (7, channels)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=2e-5)
    assert torch.equal(out[:, 6 * fd:], torch.zeros(7, channels - 6 * fd))


def test_qk_rms_norm():
    g = torch.Generator().manual_seed(13)
    n = MultiHeadRMSNorm(8, 3)
    with torch.no_grad():
        n.gamma.copy_(torch.randn(3, 8, generator=g))
    x = torch.randn(5, 3, 8, generator=g) * 4
    assert_rel(n(x), ref_rms(x, n.gamma.detach()))
    y = n(x.bfloat16())
    assert y.dtype == torch.bfloat16

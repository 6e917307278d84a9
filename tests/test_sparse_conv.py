"""Submanifold sparse convolutions vs independent dense references (spec §2.6, §5).

References: `F.conv3d` on the scattered dense grid for 3^3 (and 5^3) kernels; an explicit shifted-grid loop on a
dense [sample, frame, x, y, z] grid (frames zero-padded per sample, so nothing crosses samples) for (3,1,1,1) and
3^4 kernels; float64 gradcheck of the custom autograd function; autograd through a dense implementation for a
bigger case."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from ss4d.sparse import SparseConv1d, SparseConv3d, SparseConv4d, SparseTensor, neighbor_map, submanifold_conv
from ss4d.sparse import conv as conv_mod
from ss4d.sparse.conv import ConvPlan, SubmanifoldConvFunction


def assert_rel(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5):
    """max |a - e| <= tol * max |e| (relative to the tensor's scale) and elementwise rtol=tol."""
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * max(scale, 1e-12))


def random_sites(batch: int, res: int, density: float, gen: torch.Generator, shuffle: bool = True) -> torch.Tensor:
    """Unique random (b, x, y, z) int32 coords, rows of one batch entry contiguous; optionally shuffled within
    each batch entry (the conv must keep any input order)."""
    rows = []
    for b in range(batch):
        occ = torch.rand(res, res, res, generator=gen) < density
        xyz = occ.nonzero()
        if shuffle:
            xyz = xyz[torch.randperm(xyz.shape[0], generator=gen)]
        rows.append(torch.cat([torch.full((xyz.shape[0], 1), b, dtype=torch.long), xyz], 1))
    return torch.cat(rows).int()


# ----------------------------------------------------------------------------------------------------------------
# dense references

def dense_conv3d_ref(feats, coords, batch, res, weight, bias):
    """Scatter to [B, Cin, R, R, R], F.conv3d (weight KRSC -> [Cout, Cin, k, k, k]), gather at active sites."""
    cin = feats.shape[1]
    k = weight.shape[1]
    grid = feats.new_zeros(batch, res, res, res, cin)
    c = coords.long()
    grid = grid.index_put((c[:, 0], c[:, 1], c[:, 2], c[:, 3]), feats)
    out = F.conv3d(grid.permute(0, 4, 1, 2, 3), weight.permute(0, 4, 1, 2, 3), bias, padding=k // 2)
    return out.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 1], c[:, 2], c[:, 3]]


def dense_conv4d_ref(feats, coords, num_frames, res, weight, bias):
    """Dense loop over kernel offsets on a [S, T+2r, R+2r, R+2r, R+2r, C] zero-padded grid per sample."""
    kt, kx, ky, kz = weight.shape[1:5]
    rt, rx, ry, rz = kt // 2, kx // 2, ky // 2, kz // 2
    c = coords.long()
    s, f = c[:, 0] // num_frames, c[:, 0] % num_frames
    n_s = int(s.max()) + 1
    grid = feats.new_zeros(n_s, num_frames + 2 * rt, res + 2 * rx, res + 2 * ry, res + 2 * rz, feats.shape[1])
    grid = grid.index_put((s, f + rt, c[:, 1] + rx, c[:, 2] + ry, c[:, 3] + rz), feats)
    out = feats.new_zeros(feats.shape[0], weight.shape[0]) + bias
    for dt, dx, dy, dz in itertools.product(range(kt), range(kx), range(ky), range(kz)):
        nb = grid[s, f + dt, c[:, 1] + dx, c[:, 2] + dy, c[:, 3] + dz]  # input at p + (d - r)
        out = out + nb @ weight[:, dt, dx, dy, dz, :].t()
    return out


# ----------------------------------------------------------------------------------------------------------------
# forward vs dense (tests taking `strategy` run with each execution strategy; the others plan automatically)

@pytest.fixture(params=["pairs", "im2col"])
def strategy(request, monkeypatch):
    monkeypatch.setattr(conv_mod, "STRATEGY", request.param)
    return request.param


@pytest.mark.parametrize("ksize", [3, 5])
def test_conv3d_matches_dense_conv3d(ksize, strategy):
    g = torch.Generator().manual_seed(0)
    res, batch, cin, cout = (10, 3, 7, 5) if ksize == 3 else (7, 2, 4, 3)
    coords = random_sites(batch, res, 0.25, g)
    feats = torch.randn(coords.shape[0], cin, generator=g)
    conv = SparseConv3d(cin, cout, ksize)
    with torch.no_grad():
        conv.conv.bias.normal_(generator=g)
    x = SparseTensor(feats, coords)
    y = conv(x)
    assert torch.equal(y.coords, coords) and y.batch_size == batch
    ref = dense_conv3d_ref(feats, coords, batch, res, conv.conv.weight.detach(), conv.conv.bias.detach())
    assert_rel(y.feats.detach(), ref)


def test_conv3d_frames_never_interact():
    """A voxel alone in its frame sees only itself, even if neighbouring frames are dense there."""
    g = torch.Generator().manual_seed(1)
    full = torch.stack(torch.meshgrid(*[torch.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    coords = torch.cat([torch.cat([torch.zeros(27, 1, dtype=torch.long), full], 1),
                        torch.tensor([[1, 1, 1, 1]]),
                        torch.cat([torch.full((27, 1), 2, dtype=torch.long), full], 1)]).int()
    feats = torch.randn(coords.shape[0], 4, generator=g)
    w = torch.randn(3, 3, 3, 3, 4, generator=g)
    y = submanifold_conv(SparseTensor(feats, coords), w, None)
    assert_rel(y.feats[27], feats[27] @ w[:, 1, 1, 1, :].t())


@pytest.mark.parametrize("kernel", ["1d", "4d"])
def test_temporal_convs_match_dense_4d(kernel, strategy):
    g = torch.Generator().manual_seed(2)
    res, num_frames, samples, cin, cout = 6, 3, 2, 5, 4
    # voxels persist with probability over frames so that temporal neighbours exist; frame 1 of sample 1 empty
    base = torch.rand(samples, res, res, res, generator=g) < 0.35
    rows = []
    for s_ in range(samples):
        for f in range(num_frames):
            if (s_, f) == (1, 1):
                continue
            keep = base[s_] & (torch.rand(res, res, res, generator=g) < 0.8)
            keep |= torch.rand(res, res, res, generator=g) < 0.05
            xyz = keep.nonzero()
            xyz = xyz[torch.randperm(xyz.shape[0], generator=g)]
            rows.append(torch.cat([torch.full((xyz.shape[0], 1), s_ * num_frames + f, dtype=torch.long), xyz], 1))
    coords = torch.cat(rows).int()
    feats = torch.randn(coords.shape[0], cin, generator=g)
    conv = (SparseConv1d if kernel == "1d" else SparseConv4d)(cin, cout)
    with torch.no_grad():
        conv.conv.bias.normal_(generator=g)
    x = SparseTensor(feats, coords, samples * num_frames)
    y = conv(x, num_frames)
    ref = dense_conv4d_ref(feats, coords, num_frames, res, conv.conv.weight.detach(), conv.conv.bias.detach())
    assert_rel(y.feats.detach(), ref)
    assert torch.equal(y.coords, coords)


def test_temporal_conv_does_not_cross_samples():
    """Last frame of sample 0 and first frame of sample 1 hold the same (x, y, z): no temporal interaction."""
    coords = torch.tensor([[1, 2, 2, 2], [2, 2, 2, 2]], dtype=torch.int32)  # T=2: b=1 is (s0,f1), b=2 is (s1,f0)
    feats = torch.tensor([[1.0], [10.0]])
    w = torch.zeros(1, 3, 1, 1, 1, 1)
    w[0, 0, 0, 0, 0, 0] = 1.0  # previous frame
    w[0, 2, 0, 0, 0, 0] = 100.0  # next frame
    y = submanifold_conv(SparseTensor(feats, coords, 4), w, None, num_frames=2)
    assert torch.equal(y.feats, torch.zeros(2, 1))
    y = submanifold_conv(SparseTensor(feats, coords, 4), w, None, num_frames=4)  # now one sample: adjacent
    assert torch.equal(y.feats, torch.tensor([[1000.0], [1.0]]))


def test_temporal_conv_needs_num_frames_and_channel_check():
    x = SparseTensor(torch.randn(3, 4), torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.int32))
    with pytest.raises(ValueError, match="num_frames"):
        SparseConv1d(4, 4)(x)
    with pytest.raises(ValueError, match="input channels"):
        SparseConv3d(5, 4)(x)


def test_conv_empty_and_bf16():
    conv = SparseConv3d(4, 6)
    empty = SparseTensor(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.int32), 2)
    y = conv(empty)
    assert y.feats.shape == (0, 6)
    g = torch.Generator().manual_seed(3)
    coords = random_sites(2, 8, 0.3, g)
    x = SparseTensor(torch.randn(coords.shape[0], 4, generator=g), coords)
    y32 = conv(x).feats.detach()
    y16 = conv(x.to(dtype=torch.bfloat16)).feats.detach()
    assert y16.dtype == torch.bfloat16
    assert ((y16.float() - y32).abs().max() / y32.abs().max()).item() < 2e-2


def test_neighbor_map_symmetric_and_valid():
    g = torch.Generator().manual_seed(4)
    coords = random_sites(2, 7, 0.3, g)
    x = SparseTensor(torch.zeros(coords.shape[0], 1), coords)
    n = coords.shape[0]
    for kernel, nf in (((3, 3, 3), None), ((3, 1, 1, 1), 2), ((3, 3, 3, 3), 1)):
        nbr = neighbor_map(x, kernel, nf)
        kk = nbr.shape[1]
        assert nbr.dtype == torch.int64 and nbr.shape == (n, kk)
        p, k = (nbr < n).nonzero(as_tuple=True)
        assert torch.equal(nbr[nbr[p, k], kk - 1 - k], p)
    # explicit check of one map against a dict lookup
    nbr = neighbor_map(x, (3, 3, 3))
    table = {tuple(r): i for i, r in enumerate(coords.tolist())}
    offs = list(itertools.product((-1, 0, 1), repeat=3))
    for i, (b, cx, cy, cz) in enumerate(coords.tolist()):
        for k, (dx, dy, dz) in enumerate(offs):
            assert nbr[i, k].item() == table.get((b, cx + dx, cy + dy, cz + dz), n)


def test_neighbor_map_paths_agree(monkeypatch):
    """Dense-table lookup, sorted-key fallback and small query chunks give the same maps; far-apart sites
    (a sparse grid far larger than N) work and never wrap across rows, frames or samples."""
    from ss4d.sparse import neighbors

    g = torch.Generator().manual_seed(9)
    coords = random_sites(4, 6, 0.4, g)
    far = torch.tensor([[3, 32767, 0, 5], [3, 32766, 0, 5], [3, 0, 32767, 4]], dtype=torch.int32)
    coords = torch.cat([coords, far])
    cases = [((3, 3, 3), None), ((3, 1, 1, 1), 2), ((3, 3, 3, 3), 4), ((5, 5, 5), None)]
    maps = {}
    for mode in ("dense", "sorted"):
        if mode == "sorted":
            monkeypatch.setattr(neighbors, "DENSE_TABLE_MIN", 0)
            monkeypatch.setattr(neighbors, "DENSE_TABLE_PER_ROW", 0)
            monkeypatch.setattr(neighbors, "QUERY_CHUNK", 50)
        for kernel, nf in cases:
            maps[mode, kernel] = neighbor_map(SparseTensor(torch.zeros(len(coords), 1), coords), kernel, nf)
    for kernel, _ in cases:
        assert torch.equal(maps["dense", kernel], maps["sorted", kernel])
    n = len(coords)
    m = maps["dense", (3, 3, 3)]
    assert m[n - 3, 4] == n - 2 and m[n - 2, 22] == n - 3  # taps (x-1) / (x+1) at the grid edge
    assert bool((m[n - 1] < n).sum() == 1)  # isolated corner site: only itself


# ----------------------------------------------------------------------------------------------------------------
# gradients

def _gradcheck_case(kernel, num_frames, batch, res, density, cin, cout, seed):
    g = torch.Generator().manual_seed(seed)
    coords = random_sites(batch, res, density, g)
    n = coords.shape[0]
    nbr = neighbor_map(SparseTensor(torch.zeros(n, 1), coords), kernel, num_frames)
    feats = torch.randn(n, cin, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(cout, nbr.shape[1], cin, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(cout, dtype=torch.float64, generator=g, requires_grad=True)
    return nbr, feats, w, b


@pytest.mark.parametrize("strategy", ["pairs", "im2col"])
def test_gradcheck_custom_function_full(strategy):
    """Full (every input element) float64 gradcheck of input, weight and bias grads on a tiny 3^3 case, with
    chunks small enough to split the rows / pair lists into several pieces."""
    nbr, feats, w, b = _gradcheck_case((3, 3, 3), None, 2, 3, 0.35, 2, 2, 5)
    assert 4 < nbr.shape[0] < 40 and (nbr < nbr.shape[0]).sum() > 2 * nbr.shape[0]
    plan = ConvPlan(nbr, strategy)
    assert plan.kind == strategy
    assert torch.autograd.gradcheck(lambda a, ww, bb: SubmanifoldConvFunction.apply(a, ww, bb, nbr, 1, plan),
                                    (feats, w, b), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("strategy", ["pairs", "im2col", None])
@pytest.mark.parametrize("kernel,num_frames", [((3, 3, 3), None), ((3, 1, 1, 1), 2), ((3, 3, 3, 3), 2)])
def test_gradcheck_custom_function(kernel, num_frames, strategy):
    """Random-projection (fast mode) float64 gradcheck on bigger cases, several chunks and one chunk; strategy
    None lets the function plan by itself."""
    nbr, feats, w, b = _gradcheck_case(kernel, num_frames, 4, 4, 0.3, 3, 2, 6)
    plan = ConvPlan(nbr, strategy) if strategy else None

    def conv(chunk, with_bias=True):
        return lambda a, ww, *bb: SubmanifoldConvFunction.apply(a, ww, bb[0] if with_bias else None, nbr, chunk,
                                                                plan)

    big = 1 << 20
    assert torch.autograd.gradcheck(conv(big), (feats, w, b), eps=1e-6, atol=1e-7, fast_mode=True)
    # without bias, and with only some inputs requiring grad
    assert torch.autograd.gradcheck(conv(big, False), (feats, w), fast_mode=True)
    assert torch.autograd.gradcheck(conv(big, False), (feats.detach(), w), fast_mode=True)
    assert torch.autograd.gradcheck(conv(big, False), (feats, w.detach()), fast_mode=True)
    # chunked evaluation (several row chunks / pair slices) gives the same values and gradients
    results = []
    for chunk in (3, big):
        f, ww, bb = (t.detach().clone().requires_grad_() for t in (feats, w, b))
        y = SubmanifoldConvFunction.apply(f, ww, bb, nbr, chunk, plan)
        y.pow(2).sum().backward()
        results.append((y.detach(), f.grad, ww.grad, bb.grad))
    for a, c in zip(*results):
        assert_rel(a, c, 1e-12)


def test_plan_choice_and_all_missing_taps():
    """Surface-like sparse data plans "pairs", a full block plans "im2col"; a 3^4 kernel on a single frame per
    sample has all-missing temporal taps, which both strategies must handle (and agree on)."""
    g = torch.Generator().manual_seed(8)
    r = torch.arange(9)
    block = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    coords = torch.cat([torch.zeros(len(block), 1, dtype=torch.long), block], 1).int()
    x = SparseTensor(torch.randn(len(block), 3, generator=g), coords)
    assert ConvPlan(neighbor_map(x, (3, 3, 3)), "auto").kind == "im2col"
    sparse = SparseTensor(torch.zeros(3, 1), torch.tensor([[0, 0, 0, 0], [0, 5, 5, 5], [0, 9, 0, 1]]).int())
    assert ConvPlan(neighbor_map(sparse, (3, 3, 3)), "auto").kind == "pairs"
    nbr = neighbor_map(x, (3, 3, 3, 3), 1)
    w = torch.randn(2, 81, 3, generator=g, dtype=torch.float64)
    outs = []
    for strategy in ("pairs", "im2col"):
        plan = ConvPlan(nbr, strategy)
        assert strategy == "pairs" or plan.active.numel() == 27
        f = x.feats.double().requires_grad_()
        ww = w.clone().requires_grad_()
        y = SubmanifoldConvFunction.apply(f, ww, None, nbr, 64, plan)
        y.pow(2).sum().backward()
        outs.append((y.detach(), f.grad, ww.grad))
    for a, b in zip(*outs):
        assert_rel(a, b, 1e-12)
    assert bool((outs[0][2][:, :27] == 0).all()) and bool((outs[0][2][:, 54:] == 0).all())


def test_gradients_match_dense_autograd(strategy):
    g = torch.Generator().manual_seed(6)
    res, batch, cin, cout = 10, 2, 12, 16
    coords = random_sites(batch, res, 0.25, g)
    n = coords.shape[0]
    feats = torch.randn(n, cin, generator=g)
    w = torch.randn(cout, 3, 3, 3, cin, generator=g) * 0.1
    b = torch.randn(cout, generator=g)
    gy = torch.randn(n, cout, generator=g)

    f1, w1, b1 = (t.clone().requires_grad_() for t in (feats, w, b))
    y1 = submanifold_conv(SparseTensor(f1, coords), w1, b1).feats
    (y1 * gy).sum().backward()

    f2, w2, b2 = (t.clone().requires_grad_() for t in (feats, w, b))
    y2 = dense_conv3d_ref(f2, coords, batch, res, w2, b2)
    (y2 * gy).sum().backward()

    assert_rel(y1.detach(), y2.detach())
    assert_rel(f1.grad, f2.grad)
    assert_rel(w1.grad, w2.grad)
    assert_rel(b1.grad, b2.grad)


def test_temporal_gradients_match_dense_autograd(strategy):
    g = torch.Generator().manual_seed(7)
    res, num_frames, cin, cout = 5, 4, 6, 5
    coords = random_sites(2 * num_frames, res, 0.4, g)
    n = coords.shape[0]
    feats = torch.randn(n, cin, generator=g)
    w = torch.randn(cout, 3, 3, 3, 3, cin, generator=g) * 0.1
    b = torch.randn(cout, generator=g)
    gy = torch.randn(n, cout, generator=g)
    f1, w1, b1 = (t.clone().requires_grad_() for t in (feats, w, b))
    (submanifold_conv(SparseTensor(f1, coords), w1, b1, num_frames).feats * gy).sum().backward()
    f2, w2, b2 = (t.clone().requires_grad_() for t in (feats, w, b))
    (dense_conv4d_ref(f2, coords, num_frames, res, w2, b2) * gy).sum().backward()
    assert_rel(f1.grad, f2.grad)
    assert_rel(w1.grad, w2.grad)
    assert_rel(b1.grad, b2.grad)

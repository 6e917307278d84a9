"""Space / time x2 down-sampling (Σ/(n+1) pooling, sorted output, inverse index) and up-sampling, vs a brute-force
Python dict implementation (spec §2.6, §7.1)."""
from __future__ import annotations

import pytest
import torch

from ss4d.sparse import (
    SparseDownsample,
    SparseDownsample_t,
    SparseTensor,
    SparseUpsample,
    SparseUpsample_t,
    sparse_downsample,
    sparse_upsample,
)


def random_tensor(batch, res, density, ch, seed, shuffle=True):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        xyz = (torch.rand(res, res, res, generator=g) < density).nonzero()
        if shuffle:
            xyz = xyz[torch.randperm(xyz.shape[0], generator=g)]
        rows.append(torch.cat([torch.full((xyz.shape[0], 1), b, dtype=torch.long), xyz], 1))
    coords = torch.cat(rows).int()
    return SparseTensor(torch.randn(coords.shape[0], ch, generator=g, dtype=torch.float64).float(), coords, batch)


def brute_force_down(x: SparseTensor, axis: str):
    """dict parent -> children; parents sorted lexicographically; value Σ children / (n + 1)."""
    groups: dict[tuple, list[int]] = {}
    for i, (b, cx, cy, cz) in enumerate(x.coords.tolist()):
        key = (b, cx // 2, cy // 2, cz // 2) if axis == "space" else (b // 2, cx, cy, cz)
        groups.setdefault(key, []).append(i)
    keys = sorted(groups)
    pos = {k: j for j, k in enumerate(keys)}
    feats = x.feats.double()
    out = torch.stack([feats[groups[k]].sum(0) / (len(groups[k]) + 1) for k in keys])
    inverse = torch.empty(len(x), dtype=torch.long)
    for k, rows in groups.items():
        inverse[rows] = pos[k]
    return torch.tensor(keys, dtype=torch.int32), out, inverse


@pytest.mark.parametrize("axis", ["space", "time"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_downsample_matches_brute_force(axis, shuffle):
    x = random_tensor(4, 7, 0.3, 5, seed=0 if shuffle else 1, shuffle=shuffle)
    y, inverse = sparse_downsample(x, 2, axis)
    coords, feats, inv = brute_force_down(x, axis)
    assert y.coords.dtype == torch.int32
    assert torch.equal(y.coords, coords)
    assert torch.equal(inverse, inv)
    torch.testing.assert_close(y.feats.double(), feats, rtol=1e-6, atol=1e-6)
    assert y.batch_size == (4 if axis == "space" else 2)
    # module forms agree
    mod = SparseDownsample(2, axis) if axis == "space" else SparseDownsample_t(2)
    assert torch.equal(mod(x).feats, y.feats)


def test_pooling_is_sum_over_n_plus_one():
    """Spec example: a voxel present in both frames (a, c) -> (a + c)/3; present in one frame -> a/2."""
    coords = torch.tensor([[0, 1, 1, 1], [0, 2, 2, 2], [1, 1, 1, 1]], dtype=torch.int32)
    feats = torch.tensor([[3.0], [4.0], [6.0]])
    y, inv = sparse_downsample(SparseTensor(feats, coords), 2, "time")
    assert y.coords.tolist() == [[0, 1, 1, 1], [0, 2, 2, 2]]
    assert y.feats.flatten().tolist() == [3.0, 2.0]
    assert inv.tolist() == [0, 1, 0]
    # space: 8 children of one parent -> sum / 9; a lone child -> value / 2
    cube = torch.tensor([[0, i, j, k] for i in (2, 3) for j in (4, 5) for k in (0, 1)] + [[0, 0, 0, 0]],
                        dtype=torch.int32)
    f = torch.arange(1.0, 10.0)[:, None]
    y, _ = sparse_downsample(SparseTensor(f, cube), 2, "space")
    assert y.coords.tolist() == [[0, 0, 0, 0], [0, 1, 2, 0]]
    torch.testing.assert_close(y.feats.flatten(), torch.tensor([9.0 / 2, 36.0 / 9]))


def test_temporal_downsample_odd_batch_raises():
    x = random_tensor(3, 4, 0.3, 2, seed=2)
    with pytest.raises(ValueError, match="even"):
        sparse_downsample(x, 2, "time")
    with pytest.raises(ValueError):
        sparse_downsample(x, 3, "space")
    with pytest.raises(ValueError, match="axis"):
        sparse_downsample(x, 2, "depth")


@pytest.mark.parametrize("axis", ["space", "time"])
def test_upsample_restores_exact_coords_and_order(axis):
    x = random_tensor(4, 6, 0.35, 3, seed=3, shuffle=True)
    y, inverse = sparse_downsample(x, 2, axis)
    g = y.replace(torch.randn(len(y), 7))
    up = sparse_upsample(g, 2, axis)
    assert torch.equal(up.coords, x.coords) and up.batch_size == x.batch_size
    assert torch.equal(up.feats, g.feats[inverse])
    assert up.cache is x.cache  # neighbour maps of the fine level are reused
    mod = SparseUpsample(2, axis) if axis == "space" else SparseUpsample_t(2)
    assert torch.equal(mod(g).feats, up.feats)
    # explicit target + inverse path
    up2 = sparse_upsample(g, 2, axis, target=x, inverse=inverse)
    assert torch.equal(up2.coords, x.coords) and torch.equal(up2.feats, up.feats)
    # brute force: every child gets its parent's row
    parents = {tuple(r): i for i, r in enumerate(y.coords.tolist())}
    for i, (b, cx, cy, cz) in enumerate(x.coords.tolist()):
        key = (b, cx // 2, cy // 2, cz // 2) if axis == "space" else (b // 2, cx, cy, cz)
        assert torch.equal(up.feats[i], g.feats[parents[key]])


def test_upsample_needs_a_downsampled_tensor():
    x = random_tensor(2, 4, 0.4, 2, seed=4)
    with pytest.raises(ValueError, match="down-sampling"):
        sparse_upsample(x, 2, "space")
    y, _ = sparse_downsample(x, 2, "space")
    with pytest.raises(ValueError, match="down-sampling"):
        sparse_upsample(y, 2, "time")


def test_space_then_time_round_trip():
    x = random_tensor(4, 8, 0.2, 3, seed=5)
    a, _ = sparse_downsample(x, 2, "space")
    b, _ = sparse_downsample(a, 2, "time")
    back = sparse_upsample(sparse_upsample(b, 2, "time"), 2, "space")
    assert torch.equal(back.coords, x.coords)
    coords, _, inv_s = brute_force_down(x, "space")
    _, _, inv_t = brute_force_down(SparseTensor(torch.zeros(len(coords), 1), coords), "time")
    assert torch.equal(back.feats, b.feats[inv_t[inv_s]])


def test_downsample_backward():
    x = random_tensor(2, 5, 0.4, 3, seed=6)
    f = x.feats.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: sparse_downsample(x.replace(t), 2, "time")[0].feats, (f,))
    assert torch.autograd.gradcheck(lambda t: sparse_downsample(x.replace(t), 2, "space")[0].feats, (f,))

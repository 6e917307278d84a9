"""SparseTensor: validation errors, per-entry broadcast ops, cache sharing, sorting, concatenation (spec §2.5)."""
from __future__ import annotations

import pytest
import torch

from ss4d.sparse import SparseConv3d, SparseTensor, neighbor_map, sort_coords, sparse_cat, submanifold_conv
from ss4d.sparse.tensor import MAX_COORD, pack_keys


def make(batch=3, per=5, ch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        flat = torch.randperm(6 * 6 * 6, generator=g)[:per]
        xyz = torch.stack([flat // 36, flat // 6 % 6, flat % 6], 1)
        rows.append(torch.cat([torch.full((per, 1), b), xyz], 1))
    coords = torch.cat(rows).int()
    return SparseTensor(torch.randn(coords.shape[0], ch, generator=g), coords)


# ----------------------------------------------------------------------------------------------------------------
# validation: exactly one ValueError that names the problem

GOOD = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 4], [1, 0, 0, 0]], dtype=torch.int32)


@pytest.mark.parametrize("coords,feats,match", [
    (GOOD.float(), torch.zeros(3, 2), "integer"),
    (GOOD.bool(), torch.zeros(3, 2), "integer"),
    (GOOD[:, 0], torch.zeros(3, 2), r"shape \[N, 4\]"),
    (GOOD[None], torch.zeros(3, 2), r"shape \[N, 4\]"),
    (GOOD[:, :3], torch.zeros(3, 2), r"shape \[N, 4\]"),
    (torch.tensor([[0, 1, -2, 3]], dtype=torch.int32), torch.zeros(1, 2), "negative"),
    (torch.tensor([[-1, 1, 2, 3]], dtype=torch.int32), torch.zeros(1, 2), "negative"),
    (torch.tensor([[0, MAX_COORD, 0, 0]], dtype=torch.int32), torch.zeros(1, 2), "range"),
    (torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.int32), torch.zeros(3, 2), "contiguous"),
    (torch.tensor([[0, 1, 1, 1], [0, 2, 2, 2], [0, 1, 1, 1]], dtype=torch.int32), torch.zeros(3, 2), "duplicate"),
    (GOOD, torch.zeros(4, 2), "rows"),
    (GOOD, torch.zeros(()), "feats"),
])
def test_bad_input_raises_one_value_error(coords, feats, match):
    with pytest.raises(ValueError, match=match):
        SparseTensor(feats, coords)


def test_bad_batch_size_and_coords_type():
    with pytest.raises(ValueError, match="batch"):
        SparseTensor(torch.zeros(3, 2), GOOD, batch_size=1)
    with pytest.raises(ValueError, match="torch.Tensor"):
        SparseTensor(torch.zeros(3, 2), GOOD.tolist())


def test_good_input_and_int64_coords_accepted():
    x = SparseTensor(torch.zeros(3, 2), GOOD.long())
    assert x.coords.dtype == torch.int32 and x.batch_size == 2 and x.shape == (2, 2)
    x = SparseTensor(torch.zeros(3, 2), GOOD, batch_size=5)  # trailing empty entries allowed
    assert x.batch_size == 5 and x.batch_counts.tolist() == [2, 1, 0, 0, 0]
    assert [(s.start, s.stop) for s in x.layout] == [(0, 2), (2, 3), (3, 3), (3, 3), (3, 3)]
    empty = SparseTensor(torch.zeros(0, 2), torch.zeros(0, 4, dtype=torch.int32))
    assert len(empty) == 0 and empty.batch_size == 0


def test_conv_channel_mismatch_is_value_error():
    x = make(ch=4)
    with pytest.raises(ValueError, match="input channels"):
        SparseConv3d(3, 8)(x)
    with pytest.raises(ValueError, match="feats"):
        submanifold_conv(x.replace(x.feats[:, :, None]), torch.zeros(2, 3, 3, 3, 4), None)


# ----------------------------------------------------------------------------------------------------------------
# ops

def test_per_entry_broadcast_ops():
    x = make()
    per = torch.randn(x.batch_size, x.feats.shape[1])
    b = x.coords[:, 0].long()
    exp = per[b]
    assert torch.equal((x + per).feats, x.feats + exp)
    assert torch.equal((per + x).feats, x.feats + exp)
    assert torch.equal((x - per).feats, x.feats - exp)
    assert torch.equal((per - x).feats, exp - x.feats)
    assert torch.equal((x * per).feats, x.feats * exp)
    assert torch.equal((per * x).feats, x.feats * exp)
    assert torch.equal((x / per).feats, x.feats / exp)
    assert torch.equal((-x).feats, -x.feats)
    assert torch.equal((x * (1 + per) + per).feats, x.feats * (1 + exp) + exp)
    # scalars, per-channel vectors and full [N, C] tensors keep their usual broadcasting
    assert torch.equal((x * 2.0).feats, x.feats * 2.0)
    chan = torch.randn(x.feats.shape[1])
    assert torch.equal((x + chan).feats, x.feats + chan)
    assert torch.equal((x + x).feats, 2 * x.feats)
    with pytest.raises(ValueError, match="rows"):
        _ = x + make(batch=2)
    for y in (x + per, x * 2.0, -x):
        assert torch.equal(y.coords, x.coords) and y.cache is x.cache


def test_replace_shares_cache_and_new_coords_get_fresh_cache():
    x = make()
    y = x.replace(torch.randn_like(x.feats))
    assert y.cache is x.cache and y.coords is x.coords and y.batch_size == x.batch_size
    m = neighbor_map(y, (3, 3, 3))
    assert neighbor_map(x, (3, 3, 3)) is m
    z = x.replace(x.feats[:4], x.coords[:4])
    assert z.cache is not x.cache
    with pytest.raises(ValueError, match="rows"):
        x.replace(x.feats[:4])


def test_to_dtype_shares_cache():
    x = make()
    neighbor_map(x, (3, 3, 3))
    for y in (x.to(dtype=torch.float64), x.to(torch.float64), x.type(torch.bfloat16), x.half(), x.float()):
        assert y.feats.dtype != x.feats.dtype or y.feats.dtype == torch.float32
        assert torch.equal(y.coords, x.coords) and y.coords.dtype == torch.int32
        assert y.cache is x.cache and y.batch_size == x.batch_size
    assert x.to(dtype=torch.float64).dtype == torch.float64
    assert torch.equal(x.to(dtype=torch.float64).feats, x.feats.double())


def test_sort_coords_lexicographic_with_permutation():
    g = torch.Generator().manual_seed(1)
    flat = torch.randperm(3 * 16 * 16 * 16, generator=g)[:200]
    coords = torch.stack([flat // 4096, flat // 256 % 16, flat // 16 % 16, flat % 16], 1).int()
    feats = torch.randn(200, 3, generator=g)
    sc, sf, perm = sort_coords(coords, feats)
    expected = sorted(range(200), key=lambda i: tuple(coords[i].tolist()))
    assert perm.tolist() == expected
    assert torch.equal(sc, coords[expected]) and torch.equal(sf, feats[expected])
    assert SparseTensor(sf, sc).batch_size == 3
    # packed keys order == lexicographic order
    keys = pack_keys(sc)
    assert bool((keys[1:] > keys[:-1]).all())


def test_sparse_cat_batch_and_channels():
    a, b = make(batch=2, seed=1), make(batch=3, seed=2)
    c = sparse_cat([a, b])
    assert c.batch_size == 5 and len(c) == len(a) + len(b)
    assert torch.equal(c.feats, torch.cat([a.feats, b.feats]))
    assert torch.equal(c.coords[: len(a)], a.coords)
    exp = b.coords.clone()
    exp[:, 0] += 2
    assert torch.equal(c.coords[len(a):], exp)
    assert a.coords[:, 0].max() == 1  # inputs untouched
    d = sparse_cat([a, a.replace(a.feats * 2)], dim=1)
    assert torch.equal(d.feats, torch.cat([a.feats, a.feats * 2], 1)) and d.cache is a.cache
    with pytest.raises(ValueError, match="identical sites"):
        sparse_cat([a, b], dim=1)
    with pytest.raises(ValueError, match="no tensors"):
        sparse_cat([])


def test_split_per_entry():
    x = make(batch=3)
    parts = x.split()
    assert len(parts) == 3
    for b, p in enumerate(parts):
        sl = x.layout[b]
        assert torch.equal(p.feats, x.feats[sl]) and bool((p.coords[:, 0] == 0).all())
        assert torch.equal(p.coords[:, 1:], x.coords[sl, 1:])


def test_neighbor_cache_does_not_leak_between_coord_sets():
    """Two tensors with different sites (but the same row count) each get their own maps and results."""
    g = torch.Generator().manual_seed(3)
    x1 = make(batch=2, per=20, seed=4)
    x2 = make(batch=2, per=20, seed=5)
    assert len(x1) == len(x2) and not torch.equal(x1.coords, x2.coords)
    w = torch.randn(3, 3, 3, 3, 4, generator=g)
    y1 = submanifold_conv(x1, w, None)
    y2 = submanifold_conv(x2.replace(x1.feats), w, None)
    fresh = SparseTensor(x1.feats.clone(), x2.coords.clone())
    assert torch.equal(y2.feats, submanifold_conv(fresh, w, None).feats)
    assert not torch.allclose(y1.feats, y2.feats)
    assert neighbor_map(x1, (3, 3, 3)) is not neighbor_map(x2, (3, 3, 3))
    # a map of one kernel is not reused for another kernel or another num_frames
    c = x1.coords[x1.layout[0]]
    c2 = c.clone()
    c2[:, 0] = 1
    xt = SparseTensor(torch.zeros(2 * len(c), 1), torch.cat([c, c2]))  # frame 1 repeats frame 0's sites
    m_sp = neighbor_map(xt, (3, 3, 3))
    m_t1 = neighbor_map(xt, (3, 1, 1, 1), 1)
    m_t2 = neighbor_map(xt, (3, 1, 1, 1), 2)
    assert m_sp.shape[1] == 27 and m_t1.shape[1] == 3
    assert bool((m_t1[:, [0, 2]] == len(xt)).all())  # num_frames=1: no temporal neighbours
    n0 = len(c)
    assert torch.equal(m_t2[:n0, 2], torch.arange(n0, 2 * n0)) and torch.equal(m_t2[n0:, 0], torch.arange(n0))

"""Voxelisation in the TRELLIS canonical box: points, exact triangle/box surface voxels, grids and centres."""
import itertools
import math

import numpy as np
import pytest
import torch

from ss4d.data.voxelize import (
    coords_from_occupancy,
    occupancy_grid,
    triangle_box_overlap,
    unique_coords,
    voxel_centers,
    voxelize_mesh,
    voxelize_points,
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These tests run many tiny ops (rasterizer tiles, small tensors): one intra-op thread is fastest, and
    avoids heavy slow-downs from oversubscribed OpenMP threads on busy machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _brute_points(p: np.ndarray, R: int) -> set:
    out = set()
    for x in p:
        out.add(tuple(min(R - 1, max(0, math.floor((float(c) + 0.5) * R))) for c in x))
    return out


def _as_set(c: torch.Tensor) -> set:
    return {tuple(r) for r in c.tolist()}


def _is_sorted_unique(c: torch.Tensor) -> bool:
    rows = [tuple(r) for r in c.tolist()]
    return rows == sorted(set(rows))


@pytest.mark.parametrize("R", [1, 7, 16, 64])
def test_voxelize_points_brute_force(R):
    rng = np.random.default_rng(R)
    p = rng.uniform(-0.6, 0.6, (500, 3))
    p[:5] = [[0.5, 0.5, 0.5], [-0.5, -0.5, -0.5], [0.0, 0.0, 0.0], [0.5 - 1e-9, -0.5 + 1e-9, 0.25], [-0.7, 0.9, 0.1]]
    c = voxelize_points(torch.from_numpy(p), R)
    assert c.dtype == torch.int32 and c.shape[1] == 3
    assert _is_sorted_unique(c)
    assert _as_set(c) == _brute_points(p, R)
    assert int(c.min()) >= 0 and int(c.max()) <= R - 1


def test_voxelize_points_edge_cases():
    assert voxelize_points(torch.zeros(0, 3), 8).shape == (0, 3)
    with pytest.raises(ValueError):
        voxelize_points(torch.tensor([[float("nan"), 0.0, 0.0]]), 8)
    with pytest.raises(ValueError):
        voxelize_points(torch.zeros(1, 3), 0)


def test_centres_grid_roundtrip():
    R = 12
    rng = np.random.default_rng(0)
    c = unique_coords(torch.from_numpy(rng.integers(0, R, (300, 3))))
    ctr = voxel_centers(c, R)
    torch.testing.assert_close(ctr, (c.float() + 0.5) / R - 0.5)
    assert torch.equal(voxelize_points(ctr, R), c)
    g = occupancy_grid(c, R)
    assert g.shape == (R, R, R) and g.dtype == torch.bool and int(g.sum()) == c.shape[0]
    assert torch.equal(coords_from_occupancy(g), c)
    for x, y, z in c.tolist()[:20]:
        assert g[x, y, z]
    with pytest.raises(ValueError):
        occupancy_grid(torch.tensor([[R, 0, 0]]), R)


# ----------------------------------------------------------------------------------------------------------------
# exact triangle/box overlap vs an independent brute force: clip the triangle polygon against the cube
# ----------------------------------------------------------------------------------------------------------------
def _clip_nonempty(poly: list, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Sutherland-Hodgman clipping of a convex polygon against an axis-aligned box; True if anything remains."""
    for axis in range(3):
        for bound, keep_le in ((hi[axis], True), (lo[axis], False)):
            out = []
            n = len(poly)
            for i in range(n):
                a, b = poly[i], poly[(i + 1) % n]
                da = (a[axis] - bound) if keep_le else (bound - a[axis])
                db = (b[axis] - bound) if keep_le else (bound - b[axis])
                if da <= 0:
                    out.append(a)
                if (da < 0 < db) or (db < 0 < da):
                    t = da / (da - db)
                    out.append(a + t * (b - a))
            poly = out
            if not poly:
                return False
    return True


def _brute_triangle(tri: np.ndarray, R: int) -> set:
    out = set()
    for idx in itertools.product(range(R), repeat=3):
        lo = np.array(idx, dtype=np.float64) / R - 0.5
        if _clip_nonempty([tri[0], tri[1], tri[2]], lo, lo + 1.0 / R):
            out.add(idx)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_single_triangle_exact_vs_clipping(seed):
    R = 8
    rng = np.random.default_rng(seed)
    tri = rng.uniform(-0.45, 0.45, (3, 3))
    if seed == 3:  # a sliver (nearly degenerate) triangle
        tri[2] = tri[0] + 0.999 * (tri[1] - tri[0]) + 1e-3
    got = voxelize_mesh(torch.from_numpy(tri), torch.tensor([[0, 1, 2]]), R)
    assert _is_sorted_unique(got)
    assert _as_set(got) == _brute_triangle(tri, R)


def test_triangle_box_overlap_basic():
    v0 = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64)
    v1 = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    v2 = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    half = 0.1
    centres = torch.tensor([[0.2, 0.2, 0.0], [0.2, 0.2, 0.11], [0.2, 0.2, 0.1],  # in plane / above / touching
                            [0.7, 0.7, 0.0],  # beyond the hypotenuse (x + y = 1.4 - 0.2 > 1)
                            [0.5, 0.5, 0.05]], dtype=torch.float64)  # hypotenuse passes through the box
    n = centres.shape[0]
    got = triangle_box_overlap(v0.expand(n, 3), v1.expand(n, 3), v2.expand(n, 3), centres, half)
    assert got.tolist() == [True, False, True, False, True]


def _box_mesh(a: float, b: float):
    """Closed axis-aligned cube [a, b]^3 as 12 triangles."""
    v = torch.tensor(list(itertools.product([a, b], repeat=3)), dtype=torch.float64)  # index = 4x + 2y + z
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [(q[0], q[1], q[2]) for q in quads] + [(q[0], q[2], q[3]) for q in quads]
    return v, torch.tensor(faces)


def test_cube_surface_voxels_analytic():
    R = 16
    a, b = -0.31, 0.27  # off-grid faces
    v, f = _box_mesh(a, b)
    got = _as_set(voxelize_mesh(v, f, R))
    lo, hi = math.floor((a + 0.5) * R), math.floor((b + 0.5) * R)
    expect = {idx for idx in itertools.product(range(lo, hi + 1), repeat=3) if lo in idx or hi in idx}
    assert got == expect
    # Open3D's per-column `break` quirk keeps only the lowest z hit per triangle and (x, y) column: a subset,
    # with holes in the vertical faces of this two-triangles-per-face mesh
    o3d = _as_set(voxelize_mesh(v, f, R, mode="open3d"))
    assert o3d <= expect and len(o3d) < len(expect)
    with pytest.raises(ValueError):
        voxelize_mesh(v, f, R, mode="nope")


def test_mesh_contains_dense_samples_and_clamps():
    R = 24
    rng = np.random.default_rng(5)
    verts = torch.from_numpy(rng.uniform(-0.5, 0.5, (30, 3)) * 0.6)
    faces = torch.from_numpy(rng.integers(0, 30, (12, 3)))
    got = _as_set(voxelize_mesh(verts, faces, R))
    # dense barycentric samples of every triangle land in surface voxels
    w = rng.dirichlet([1, 1, 1], 4000)
    tri = verts[faces].numpy()
    pts = np.einsum("sk,fkd->fsd", w, tri).reshape(-1, 3)
    assert _as_set(voxelize_points(torch.from_numpy(pts), R)) <= got
    # vertices on / beyond the box boundary are clamped inside like the official toolkit
    v = torch.tensor([[0.5, 0.5, 0.5], [0.7, -0.6, 0.5], [0.5, 0.5, -0.5]], dtype=torch.float64)
    c = voxelize_mesh(v, torch.tensor([[0, 1, 2]]), R)
    assert int(c.min()) >= 0 and int(c.max()) <= R - 1
    # chunking does not change the result
    assert _as_set(voxelize_mesh(verts, faces, R, max_pairs=50)) == got

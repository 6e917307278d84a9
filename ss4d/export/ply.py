"""Per-frame 3D Gaussians as INRIA-3DGS ``.ply`` files (the layout common splat viewers open).

One ``vertex`` element, binary little-endian float32 properties in this order::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  opacity  scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

written like the official TRELLIS ``Gaussian.save_ply`` from the *activated* values: positions are world
``get_xyz``, normals are zero, ``f_dc`` is the SH-DC coefficient (``colour = 0.5 + 0.28209479 f_dc``),
``opacity`` is the pre-sigmoid logit of ``get_opacity`` (computed exactly as ``_opacity + logit(opacity_bias)``,
so it never saturates to +-inf), ``scale_i = log(get_scaling)`` and ``rot`` is the normalised ``get_rotation``
quaternion (w, x, y, z).

By default positions stay in the ss4d world (z up, object in the [-0.5, 0.5]^3 box). ``up="y"`` rotates positions
and orientations into a y-up world (:data:`Y_UP`: ``(x, y, z) -> (x, z, -y)``, the glTF / three.js convention);
``up="y-down"`` applies :data:`Z_UP_TO_Y_UP`, the matrix the newer official ``save_ply`` uses (``(x, -z, y)``: the
object's up becomes -y, as in COLMAP-style scenes). Any other 3x3 rotation can be given as ``transform``;
:func:`load_ply` undoes it when given the same ``up`` / matrix.

``sh_degree=d`` (1..3) adds ``f_rest_0 .. f_rest_{3((d+1)^2-1)-1}`` zeros after ``f_dc_2`` (the INRIA order), since
the reference 3DGS loader asserts exactly ``3 (max_sh_degree+1)^2 - 3`` of them; ss4d Gaussians are view-independent
(degree 0), so the padding changes nothing visible.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from ss4d.gaussians import Gaussians, inverse_softplus
from ss4d.io_utils import atomic_file

__all__ = ["PLY_PROPERTIES", "UP_AXES", "Y_UP", "Z_UP_TO_Y_UP", "gaussians_to_ply_arrays", "load_ply",
           "ply_properties", "save_ply"]

PLY_PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                  "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")

#: the official TRELLIS ``save_ply`` default (``(x, y, z) -> (x, -z, y)`` as row vectors ``p @ M.T``): up becomes -y
Z_UP_TO_Y_UP = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))
#: z-up world -> y-up world (``(x, y, z) -> (x, z, -y)``): x stays, the old up (+z) becomes +y
Y_UP = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))
#: ``up`` names accepted by :func:`save_ply` / :func:`load_ply` and their rotations
UP_AXES = {"z": None, "y": Y_UP, "y-down": Z_UP_TO_Y_UP}


def ply_properties(sh_degree: int = 0) -> tuple[str, ...]:
    """The vertex property names in file order for SH degree ``sh_degree`` (0..3; f_rest_* are inserted after
    f_dc_2 as in the INRIA 3DGS ``construct_list_of_attributes``)."""
    if sh_degree not in (0, 1, 2, 3):
        raise ValueError(f"sh_degree must be 0, 1, 2 or 3, got {sh_degree!r}")
    rest = tuple(f"f_rest_{i}" for i in range(3 * ((sh_degree + 1) ** 2 - 1)))
    return PLY_PROPERTIES[:9] + rest + PLY_PROPERTIES[9:]


def _up_transform(up: str, transform):
    if up not in UP_AXES:
        raise ValueError(f"up must be one of {sorted(UP_AXES)}, got {up!r}")
    if transform is not None and up != "z":
        raise ValueError("give either up or transform, not both")
    return transform if transform is not None else UP_AXES[up]


def _quat_to_mat(q: np.ndarray) -> np.ndarray:
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(-1, 3, 3)


def _mat_to_quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrices -> unit quaternions (w, x, y, z), w >= 0 (numerically robust branch selection)."""
    m = m.astype(np.float64)
    t = np.stack([1 + m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                  1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], 1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1)
    k = np.argmax(t, -1)
    q = np.zeros((m.shape[0], 4))
    s = np.sqrt(np.maximum(t[np.arange(len(k)), k], 1e-12)) * 2  # 4 * |component k|
    c0, c1, c2, c3 = (k == 0), (k == 1), (k == 2), (k == 3)
    q[c0] = np.stack([s[c0] / 4, (m[c0, 2, 1] - m[c0, 1, 2]) / s[c0], (m[c0, 0, 2] - m[c0, 2, 0]) / s[c0],
                      (m[c0, 1, 0] - m[c0, 0, 1]) / s[c0]], -1)
    q[c1] = np.stack([(m[c1, 2, 1] - m[c1, 1, 2]) / s[c1], s[c1] / 4, (m[c1, 0, 1] + m[c1, 1, 0]) / s[c1],
                      (m[c1, 0, 2] + m[c1, 2, 0]) / s[c1]], -1)
    q[c2] = np.stack([(m[c2, 0, 2] - m[c2, 2, 0]) / s[c2], (m[c2, 0, 1] + m[c2, 1, 0]) / s[c2], s[c2] / 4,
                      (m[c2, 1, 2] + m[c2, 2, 1]) / s[c2]], -1)
    q[c3] = np.stack([(m[c3, 1, 0] - m[c3, 0, 1]) / s[c3], (m[c3, 0, 2] + m[c3, 2, 0]) / s[c3],
                      (m[c3, 1, 2] + m[c3, 2, 1]) / s[c3], s[c3] / 4], -1)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _rotation(transform) -> np.ndarray | None:
    if transform is None:
        return None
    M = np.asarray(transform, dtype=np.float64)
    if M.shape != (3, 3) or not np.allclose(M @ M.T, np.eye(3), atol=1e-6) or np.linalg.det(M) < 0:
        raise ValueError("transform must be a 3x3 rotation matrix")
    return M


def gaussians_to_ply_arrays(gaussians: Gaussians, transform=None) -> dict[str, np.ndarray]:
    """The PLY columns (float32 arrays, :data:`PLY_PROPERTIES` order) for one frame."""
    g = gaussians
    with torch.no_grad():
        xyz = g.get_xyz.detach().cpu().double().numpy()
        f_dc = g._features_dc.detach().cpu().reshape(len(g), -1)[:, :3].double().numpy()
        opacity = (g._opacity.detach().cpu().double() + g.opacity_bias_logit.cpu().double()).reshape(-1).numpy()
        scale = torch.log(g.get_scaling.detach().cpu()).double().numpy()
        rot = g.get_rotation.detach().cpu().double().numpy()
    M = _rotation(transform)
    if M is not None and len(g):
        xyz = xyz @ M.T
        rot = _mat_to_quat(M[None] @ _quat_to_mat(rot))
    cols = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    cols.update({"nx": np.zeros(len(g)), "ny": np.zeros(len(g)), "nz": np.zeros(len(g))})
    cols.update({f"f_dc_{i}": f_dc[:, i] for i in range(3)})
    cols["opacity"] = opacity
    cols.update({f"scale_{i}": scale[:, i] for i in range(3)})
    cols.update({f"rot_{i}": rot[:, i] for i in range(4)})
    return {k: np.ascontiguousarray(cols[k], dtype=np.float32) for k in PLY_PROPERTIES}


def save_ply(gaussians: Gaussians, path, *, up: str = "z", sh_degree: int = 0, transform=None,
             overwrite: bool = True, comments=()) -> Path:
    """Write one frame of Gaussians as a binary little-endian INRIA-3DGS PLY (atomically) and return the path.

    ``up``: ``"z"`` (ss4d's world), ``"y"`` or ``"y-down"`` (see the module doc); ``sh_degree``: f_rest_* zeros."""
    path = Path(path)
    names = ply_properties(sh_degree)
    cols = gaussians_to_ply_arrays(gaussians, _up_transform(up, transform))
    data = np.zeros(len(gaussians), dtype=[(k, "<f4") for k in names])
    for k, v in cols.items():
        data[k] = v
    el = PlyElement.describe(data, "vertex")
    ply = PlyData([el], text=False, byte_order="<", comments=["generated by ss4d", *comments])
    with atomic_file(path, overwrite=overwrite) as tmp:
        ply.write(str(tmp))
    return path


def load_ply(path, *, up: str = "z", transform=None, **gaussian_kw) -> Gaussians:
    """Read an INRIA-3DGS PLY into :class:`Gaussians` (raw parameters recomputed from the stored activated values,
    so ``get_xyz / get_scaling / get_rotation / get_opacity`` match what was saved within float32 tolerance and
    ``_features_dc`` is exact). Extra properties (``f_rest_*``, ...) are ignored. ``up`` / ``transform`` are what the
    file was written with (the inverse rotation is applied). ``gaussian_kw``: ``aabb``, ``scaling_bias``, ... for the
    returned object."""
    path = Path(path)
    try:
        ply = PlyData.read(str(path))
        v = ply["vertex"].data
    except Exception as e:  # noqa: BLE001 - plyfile raises several types
        raise ValueError(f"{path} is not a readable PLY file ({e})") from e
    names = v.dtype.names or ()
    missing = [k for k in PLY_PROPERTIES if k not in names and k not in ("nx", "ny", "nz")]
    if missing:
        raise ValueError(f"{path} is not a 3D Gaussian PLY: missing properties {missing}")

    def col(*ks):
        return np.stack([np.asarray(v[k], dtype=np.float64) for k in ks], -1).reshape(len(v), len(ks))

    xyz, f_dc = col("x", "y", "z"), col("f_dc_0", "f_dc_1", "f_dc_2")
    logit, log_s, rot = col("opacity")[:, 0], col("scale_0", "scale_1", "scale_2"), col("rot_0", "rot_1", "rot_2",
                                                                                            "rot_3")
    M = _rotation(_up_transform(up, transform))
    if M is not None and len(v):
        xyz = xyz @ M  # inverse of p @ M.T
        rot = _mat_to_quat(M.T[None] @ _quat_to_mat(rot))
    rot = rot / np.maximum(np.linalg.norm(rot, axis=-1, keepdims=True), 1e-12)

    g = Gaussians(torch.zeros(0, 3), torch.zeros(0, 1, 3), torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 1),
                  **gaussian_kw)
    aabb = torch.tensor(g.aabb, dtype=torch.float64)
    t = torch.from_numpy
    _xyz = (t(xyz) - aabb[:3]) / aabb[3:]
    scales = torch.exp(t(log_s))
    s2 = (scales.square() - g.mininum_kernel_size ** 2).clamp_min(1e-24).sqrt()
    _sc = inverse_softplus(s2) - g.scale_bias.double()
    _rot = t(rot) - torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    _op = t(logit) - g.opacity_bias_logit.double()
    f32 = torch.float32
    return Gaussians(_xyz.to(f32), t(f_dc).to(f32).reshape(-1, 1, 3), _sc.to(f32), _rot.to(f32),
                     _op.to(f32).reshape(-1, 1), g.aabb, g.scaling_bias, g.opacity_bias, g.mininum_kernel_size)

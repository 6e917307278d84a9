"""Official test vectors: every case under `<shared>/vectors` (a folder with config.json + outputs.safetensors) is run
through `ss4d.testing.vectors.run_case` on a copy without its outputs and compared by name with the reference
(atol = rtol = 1e-5, sampler atol 5e-5; integer tensors exact); plus the shared checker scripts themselves."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ss4d.testing import shared_dir

REPO = Path(__file__).resolve().parents[1]


def _case_names() -> list[str]:
    d = shared_dir()
    root = d / "vectors" if d is not None else None
    if root is None or not root.is_dir():
        return ["<no vectors>"]
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob("outputs.safetensors")
                  if (p.parent / "config.json").exists())


def _vectors_root(shared: Path) -> Path:
    root = shared / "vectors"
    if not root.is_dir():
        pytest.skip(f"no vectors folder under {shared}")
    return root


@pytest.mark.parametrize("case", _case_names())
def test_vector_case(shared, case, tmp_path):
    from safetensors.torch import load_file

    from ss4d.testing.vectors import run_case

    src = _vectors_root(shared) / case
    if not (src / "outputs.safetensors").exists():
        pytest.skip(f"case {case} not found")
    copy = tmp_path / src.name
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("outputs.safetensors"))
    assert not (copy / "outputs.safetensors").exists()
    ref = load_file(str(src / "outputs.safetensors"))
    with torch.no_grad():
        ours = run_case(copy)
    atol = 5e-5 if ("sampler" in src.name or "pipeline_e2e" in case) else 1e-5  # chained cases, as check_vectors
    problems = []
    for name, r in ref.items():
        if name not in ours:
            if not name.startswith("inter."):
                problems.append(f"missing output {name!r}")
            continue
        o = ours[name]
        if not isinstance(o, torch.Tensor) or tuple(o.shape) != tuple(r.shape):
            problems.append(f"{name!r}: shape {getattr(o, 'shape', type(o))} != {tuple(r.shape)}")
            continue
        if not r.is_floating_point():
            if not torch.equal(o.detach().cpu().to(r.dtype), r):
                problems.append(f"{name!r}: integer values differ")
            continue
        o = o.detach().cpu().double()
        if not torch.isfinite(o).all():
            problems.append(f"{name!r}: non-finite values")
            continue
        try:
            torch.testing.assert_close(o, r.double(), atol=atol, rtol=1e-5)
        except AssertionError as e:
            problems.append(f"{name!r}: {str(e).splitlines()[1] if len(str(e).splitlines()) > 1 else e}")
    assert not problems, f"{case}: " + "; ".join(problems[:10])


@pytest.mark.slow
def test_shared_checker_scripts(shared):
    tools = shared / "tools"
    root = _vectors_root(shared)
    manifest = root / "state_dict_manifests.json"
    if not (tools / "check_vectors.py").exists() or not manifest.exists():
        pytest.skip("shared checker scripts or manifest not found")
    for cmd in ([sys.executable, str(tools / "check_vectors.py"), str(root)],
                [sys.executable, str(tools / "check_manifests.py"), str(manifest)]):
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"{' '.join(cmd[1:])} exited {res.returncode}:\n{res.stdout[-3000:]}\n" \
                                    f"{res.stderr[-3000:]}"

"""Worker subprocesses (``python -m MODULE ARGS``): the one spawner for the dataset renderer and the evaluation GT."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["run_module_worker", "worker_main"]


def run_module_worker(module: str, args: Sequence[str], log_path, *, timeout: float | None = None, threads: int = 0,
                      python: str | None = None, banner: bool = False) -> tuple[int | None, str]:
    """Run ``python -m module *args`` in its own session with stdout + stderr appended to ``log_path`` and this
    checkout on ``PYTHONPATH``; ``threads > 0`` caps the OMP / MKL / OpenBLAS threads. Returns ``(status, "")``, or
    ``(None, "timed out after N s")`` after killing the worker's process group; ``banner`` logs the command first."""
    env = dict(os.environ)
    if threads > 0:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[k] = str(threads)
    pkg_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [python or sys.executable, "-m", module, *map(str, args)]
    with open(log_path, "ab") as lf:
        if banner:
            lf.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            lf.flush()
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            return proc.wait(timeout=timeout), ""
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()
            return None, f"timed out after {timeout:.0f} s"
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()
            raise


def worker_main(prog: str, flag: str, run_job, argv=None) -> int:
    """The entry of a worker module: ``python -m prog flag JOB.json`` reads the job file and returns
    ``run_job(job)``'s status."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog=prog)
    p.add_argument(flag, required=True, dest="job", help="job JSON file")
    a = p.parse_args(argv)
    return run_job(json.loads(Path(a.job).read_text(encoding="utf-8")))

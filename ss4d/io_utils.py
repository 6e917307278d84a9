"""Atomic file and folder writing.

Every writer here produces its output under a temporary name in the destination folder and renames it into
place only once it is complete, so a crash (or Ctrl-C) never leaves a half-written file or folder under the final
name. Writers refuse to replace an existing target unless ``overwrite=True`` and raise :class:`FileExistsError`.

* :func:`atomic_write_bytes` / :func:`atomic_write_text` - whole contents in memory;
* :func:`atomic_file` - a context manager yielding a temporary *path* for libraries that want a file name
  (``safetensors.save_file``, ``PlyData.write``, encoders ...);
* :func:`atomic_dir` - a context manager yielding a temporary *folder* next to the target, renamed onto the target
  when the ``with`` block succeeds and deleted when it fails.

Also the append-only JSONL log writer (:func:`append_jsonl`) and :func:`sha256_file`, shared by the dataset
writers and the evaluation.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["append_jsonl", "atomic_dir", "atomic_file", "atomic_write_bytes", "atomic_write_text", "sha256_file"]


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777  # keep the mode of the file being replaced
    except OSError:
        return 0o666 & ~_umask()


def _refuse(path: Path, overwrite: bool, kind: str = "file") -> None:
    if not overwrite and (path.exists() or path.is_symlink()):
        raise FileExistsError(f"{path} already exists (pass overwrite=True to replace the {kind})")


def _unlink_quiet(p) -> None:
    with contextlib.suppress(OSError):
        os.unlink(p)


def _place_file(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` onto ``path``; without ``overwrite`` this never replaces a file that appeared
    in the meantime (hard link = atomic "create if absent"; falls back to check + rename where links fail)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists (pass overwrite=True to replace the file)") from None
    except OSError:  # file system without hard links
        _refuse(path, overwrite)
        os.replace(tmp, path)
        return
    _unlink_quiet(tmp)


@contextlib.contextmanager
def atomic_file(path, *, overwrite: bool = False, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds the file written there is renamed onto
    ``path`` (parents are created). On an exception the temporary file is removed and ``path`` is untouched.

    The temporary name keeps ``path``'s suffix, so libraries that pick a format from the extension still work."""
    path = Path(path)
    _refuse(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{path.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {path}")
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))  # mkstemp creates 0600
        _place_file(tmp, path, overwrite)
    except BaseException:
        _unlink_quiet(tmp)
        raise


def atomic_write_bytes(path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically and return ``Path(path)``."""
    path = Path(path)
    with atomic_file(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return path


def atomic_write_text(path, text: str, *, overwrite: bool = False, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and return ``Path(path)``."""
    return atomic_write_bytes(path, text.encode(encoding), overwrite=overwrite)


@contextlib.contextmanager
def atomic_dir(path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; fill it inside the ``with`` block. On success it is
    renamed to ``path`` (an existing ``path`` is replaced only with ``overwrite=True``: it is first moved aside,
    then deleted once the new folder is in place). On an exception the temporary folder is deleted and an
    existing ``path`` is left as it was.

    Refuses early (before any work) when ``path`` exists and ``overwrite`` is false."""
    path = Path(path)
    _refuse(path, overwrite, "folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
        if not (path.exists() or path.is_symlink()):
            try:
                os.rename(tmp, path)  # fails if a non-empty folder appeared meanwhile
            except OSError:
                _refuse(path, overwrite, "folder")
                raise
            return
        _refuse(path, overwrite, "folder")
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
        os.rmdir(old)
        os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(old, path)  # put the previous contents back
            raise
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            _unlink_quiet(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def append_jsonl(path, row: dict, lock=None, default=None) -> None:
    """Append ``row`` as one sorted-key JSON line and fsync it (under ``lock`` when given); a line left partial by a
    killed writer is ended first. ``default`` is passed to :func:`json.dumps`."""
    line = json.dumps(row, sort_keys=True, default=default) + "\n"
    with lock or contextlib.nullcontext(), open(path, "a", encoding="utf-8") as f:
        if f.tell() > 0:  # a writer killed mid-line leaves a partial line: start on a fresh one
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write("\n")
        f.write(line)
        f.flush()
        os.fsync(f.fileno())

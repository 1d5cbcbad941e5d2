"""Where pqlib keeps files: the project root, the cache directory; config hashing, atomic writes.

Records and executed notebooks go under the *project root* (:func:`project_root`): the
repository when pqlib runs from inside its checkout, else the current directory, or the folder
named by ``--root`` / ``$PQLIB_ROOT``. Everything pqlib computes once and reuses (the MNIST
archive, trained teachers, trained priors, encoded latents) lives under ``$PQLIB_CACHE``
(default ``~/.cache/pqlib``), in a file whose name carries a hash of the configuration that
produced it. Every file pqlib writes goes through :func:`atomic_write` (JSON files through
:func:`write_json`), so an interrupted run never leaves half a file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["project_root", "is_checkout", "cache_dir", "config_hash", "atomic_write",
           "atomic_dir", "write_json", "md5sum"]


def is_checkout(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a pqlib repository checkout: its ``pyproject.toml`` names the
    ``pqlib`` project, or it holds ``.git`` beside a ``pqlib/`` package."""
    folder = Path(folder)
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file() and re.search(r'^name\s*=\s*"pqlib"', pyproject.read_text(), re.M):
        return True
    return (folder / ".git").exists() and (folder / "pqlib").is_dir()


def project_root(root: str | os.PathLike | None = None) -> Path:
    """The folder records and executed notebooks go under (profiles name paths inside it).

    ``root`` if given, else ``$PQLIB_ROOT`` if set, else the pqlib checkout that contains the
    current directory (found by walking up from it), else the current directory. A root given
    explicitly must be an existing folder (:class:`FileNotFoundError` otherwise).
    """
    given = root or os.environ.get("PQLIB_ROOT")
    if given:
        path = Path(given).expanduser().resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"{'--root' if root else 'PQLIB_ROOT'} {str(given)!r} is not a "
                                    "folder; create it or name the folder that holds (or will "
                                    "hold) the records")
        return path
    here = Path.cwd().resolve()
    return next((d for d in (here, *here.parents) if is_checkout(d)), here)


def cache_dir(*parts: str) -> Path:
    """Return (and create) ``$PQLIB_CACHE/<parts...>``; default root ``~/.cache/pqlib``."""
    path = (Path(os.environ.get("PQLIB_CACHE") or Path.home() / ".cache" / "pqlib")
            .expanduser().joinpath(*parts))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_hash(config: dict, length: int = 12) -> str:
    """Stable short hex digest of a JSON-serialisable config (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """MD5 hex digest of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success.

    Example
    -------
    >>> with atomic_write("out.json", "w") as f:  # doctest: +SKIP
    ...     f.write("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON and a final newline, atomically (:func:`atomic_write`);
    numpy / torch scalars and arrays are written as numbers and lists, other objects as text."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")


def _json_default(o):
    return o.item() if hasattr(o, "item") else o.tolist() if hasattr(o, "tolist") else str(o)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` when the block succeeds.

    The directory appears complete or not at all. With ``overwrite=False`` an existing
    non-empty ``path`` raises :class:`FileExistsError`.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} exists and is not empty; choose another directory or pass overwrite/--force"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

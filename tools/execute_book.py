"""Execute the book's notebooks side by side before ``jupyter-book build`` (``make book-only``).

Jupyter Book executes the notebooks of its table of contents one after the other, each kernel
with every core. On a small machine most of a page's time is single-threaded (imports, small
tensors, plotting), so this script runs ``--workers`` kernels at once instead, each with an
equal share of the cores and the sweep's malloc settings (``pqlib.sweep.KERNEL_MALLOC``),
and stores every executed notebook in the build's jupyter-cache
(``_build/.jupyter_cache``) exactly as myst-nb would: the build then finds each page's outputs
there ("Using cached notebook") and executes nothing. A page that fails here is left out of the
cache, so the build executes it again and reports the error itself; a page already cached is
skipped.

    python tools/execute_book.py [--workers 2] [--root .]
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml

NOTEBOOK_SUFFIXES = (".py", ".ipynb")


def book_notebooks(root: Path) -> list[Path]:
    """The notebooks (``.py`` in the percent format, ``.ipynb``) of ``_toc.yml`` that the build
    executes: every ``file`` entry but those matching the book's ``exclude_patterns`` (e.g. the
    ``.ipynb`` twin of a ``.py`` page) or ``execute.exclude_patterns``."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    excluded = [*config.get("exclude_patterns", []),
                *config.get("execute", {}).get("exclude_patterns", [])]
    files: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    walk([{"file": toc["root"]}, toc])
    found = [root / f"{name}{suffix}" for name in files for suffix in NOTEBOOK_SUFFIXES
             if (root / f"{name}{suffix}").is_file()]
    return [p for p in found
            if not any(fnmatch.fnmatch(p.relative_to(root).as_posix(), pat) for pat in excluded)]


def read_notebook(path: Path):
    """The notebook as myst-nb reads it (``nb_custom_formats``: jupytext, percent format)."""
    import jupytext
    import nbformat

    if path.suffix == ".py":
        return jupytext.reads(path.read_text(), fmt="py:percent")
    return nbformat.read(path, as_version=4)


def _execute(path: str, threads: int, timeout: int) -> tuple[str, dict, float, str | None]:
    """Execute one notebook in its folder with ``threads`` threads (a worker process)."""
    from jupyter_cache.executors.utils import single_nb_execution

    from pqlib.sweep import kernel_malloc

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # inherited by the kernel
        os.environ[var] = str(threads)
    os.environ.update(kernel_malloc())
    nb = read_notebook(Path(path))
    result = single_nb_execution(nb, cwd=str(Path(path).parent), timeout=timeout,
                                 allow_errors=False, meta_override=True)
    return path, nb, result.time, result.exc_string


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the book's root folder")
    parser.add_argument("--workers", type=int, default=2, help="kernels at once (default 2)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: give at least 1")
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    root = args.root.resolve()
    config = yaml.safe_load((root / "_config.yml").read_text())
    timeout = int(config.get("execute", {}).get("timeout", 1800))
    cache = get_cache(str(root / "_build" / ".jupyter_cache"))
    todo = []
    for path in book_notebooks(root):
        nb = read_notebook(path)
        if nb.metadata.get("mystnb", {}).get("execution_mode", "cache") != "cache":
            continue  # a page that sets its own execution mode (e.g. force) is the build's
        try:
            cache.match_cache_notebook(nb)
        except KeyError:
            todo.append(path)
    # the largest files first: a rough proxy for the longest pages (the pool's tail is shorter)
    todo.sort(key=lambda p: -p.stat().st_size)
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    print(f"execute_book: {len(todo)} notebooks to execute, {args.workers} at a time with "
          f"{threads} thread(s) each", flush=True)
    failed, start = 0, time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(_execute, str(p), threads, timeout) for p in todo]
        for future in as_completed(futures):
            path, nb, seconds, error = future.result()
            name = Path(path).relative_to(root)
            if error:
                failed += 1
                print(f"execute_book: {name} failed after {seconds:.0f} s (left to the build, "
                      f"which reports it):\n{error[-2000:]}", file=sys.stderr, flush=True)
                continue
            cache.cache_notebook_bundle(CacheBundleIn(nb, path, data={"execution_seconds": seconds}),
                                        check_validity=False, overwrite=True)
            print(f"execute_book: {name} in {seconds:.1f} s", flush=True)
    print(f"execute_book: done in {time.perf_counter() - start:.0f} s ({failed} failed)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of ``pqlib.quantize.clvq`` streaming a memory-mapped 10^6 × 64 float32 array.

The array (256 MB) is written to a temporary directory, then a *fresh* Python process runs
``clvq`` on it and reports its peak resident set size (``ru_maxrss``), so nothing that the
parent allocated is counted. Two ways of feeding the data are measured:

``stream``  an iterable whose ``__iter__`` re-opens the ``.npy`` memory map and yields blocks
            of ``--block`` rows (a re-iterable: CLVQ passes over it, then a final exact pass
            gives the Voronoi weights; no labels are kept);
``array``   the memory-mapped ``np.ndarray`` itself (random mini-batches by index, labels for
            all rows are returned).

Acceptance (issue 3): peak RSS under 1 GiB in ``stream`` mode. Pages of the mapped file that
the process touches count in its RSS (``RssFile``) although the kernel can drop them at will;
the anonymous part (``RssAnon``) is what the process itself holds.

Usage::

    flock /tmp/pqlib-cpu.lock .venv/bin/python benchmarks/clvq_memory.py
    .venv/bin/python benchmarks/clvq_memory.py --rows 100000 --mode stream   # quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    import torch
    from pqlib.quantize import clvq

    path, mode, block, k, batch, passes = sys.argv[1:7]
    block, k, batch, passes = int(block), int(k), int(batch), int(passes)

    def status():
        out = {}
        for line in open("/proc/self/status"):
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024  # MiB
        return out

    class Blocks:
        def __iter__(self):
            arr = np.load(path, mmap_mode="r")
            for s in range(0, arr.shape[0], block):
                yield arr[s : s + block]

    base = status()
    arr = np.load(path, mmap_mode="r")
    n = arr.shape[0]
    data = Blocks() if mode == "stream" else arr
    steps = passes * -(-n // batch)
    t = time.perf_counter()
    q = clvq(data, k, steps=steps, batch_size=batch, seed=0)
    seconds = time.perf_counter() - t
    end = status()
    print(json.dumps({
        "mode": mode, "rows": n, "dim": arr.shape[1], "k": k, "batch_size": batch,
        "steps": q.iterations, "seconds": round(seconds, 2),
        "weight_source": q.weight_source, "distortion": q.distortion,
        "rss_after_imports_mib": round(base["VmRSS"], 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_anon_end_mib": round(end["RssAnon"], 1), "rss_file_end_mib": round(end["RssFile"], 1),
    }))
""")


def write_memmap(path: Path, rows: int, dim: int, seed: int = 0, block: int = 100_000) -> None:
    """Gaussian-mixture rows (20 centres) written block by block into a .npy memory map."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(20, dim)).astype(np.float32)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    for s in range(0, rows, block):
        m = min(block, rows - s)
        arr[s : s + m] = centres[rng.integers(0, 20, m)] + rng.normal(size=(m, dim)).astype(np.float32)
    arr.flush()
    del arr


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--block", type=int, default=10_000, help="rows per yielded block (stream)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--mode", choices=["stream", "array", "both"], default="both")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        write_memmap(path, args.rows, args.dim)
        print(f"wrote {path.stat().st_size / 2**20:.0f} MiB ({args.rows} x {args.dim} float32)",
              file=sys.stderr)
        modes = ["stream", "array"] if args.mode == "both" else [args.mode]
        for mode in modes:
            cmd = [sys.executable, "-c", CHILD, str(path), mode, str(args.block), str(args.k),
                   str(args.batch_size), str(args.passes)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stderr, file=sys.stderr)
                return res.returncode
            record = json.loads(res.stdout.strip().splitlines()[-1])
            verdict = "PASS" if record["peak_rss_mib"] < 1024 else "FAIL"
            print(json.dumps(record))
            print(f"{mode}: peak RSS {record['peak_rss_mib']:.0f} MiB "
                  f"(after imports {record['rss_after_imports_mib']:.0f} MiB; at the end anon "
                  f"{record['rss_anon_end_mib']:.0f} MiB, file {record['rss_file_end_mib']:.0f} MiB) "
                  f"in {record['seconds']:.1f} s -> {verdict} (< 1024 MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

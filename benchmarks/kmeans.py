"""Lloyd k-means speed: ``pqlib.quantize.kmeans`` against scikit-learn and faiss-cpu.

Same data (MNIST training images, average-pooled to d = 16 (4×4), 196 (14×14) or 784 pixels,
first N rows, float32), same initial points (pqlib's seeded k-means++), same number of
iterations (pqlib ``tol=None``; scikit-learn ``KMeans(algorithm="lloyd", n_init=1, tol=0)``,
which can only stop early at a fixed point and then says so in ``sk_iters``; faiss
``Kmeans(niter=...)`` with subsampling disabled), same threads for all three.

Reported per configuration: the best wall time of ``--repeats`` runs, the ratios
pqlib/faiss and scikit-learn/pqlib, GFLOP/s against the 2·N·K·d flops of one iteration's
distance product, and the final distortion of each library's points (computed by pqlib in
float64) to show that the same work was done.

Acceptance (issue 3): at N = 60000, d = 196, K = 50, pqlib/faiss <= 1.2 and
scikit-learn/pqlib >= 1.5.

Usage::

    flock /tmp/pqlib-cpu.lock .venv/bin/python benchmarks/kmeans.py            # full grid
    flock /tmp/pqlib-cpu.lock .venv/bin/python benchmarks/kmeans.py --quick    # 2 rows
    ... --out results/bench_kmeans.md   (or .csv)

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, where set on a machine, slow scikit-learn's OpenBLAS;
the script prints which BLAS kernels each library loaded (threadpoolctl) so the table can be
read with that in mind. It does not change the environment.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

GRID_N = (6000, 60000)
GRID_D = (16, 196, 784)
GRID_K = (10, 50)
QUICK = [(6000, 196, 50), (60000, 196, 50)]


def mnist_pixels(n: int, d: int) -> torch.Tensor:
    """First n MNIST training images, average-pooled to sqrt(d)×sqrt(d), flattened: (n, d) float32."""
    from pqlib.data import load

    side = int(round(d**0.5))
    if side * side != d:
        raise ValueError(f"d={d} is not a square number of pixels")
    images = load("mnist").images[:n]
    if side != 28:
        images = torch.nn.functional.adaptive_avg_pool2d(images, side)
    return images.flatten(1).contiguous()


def best_time(fn, repeats: int) -> tuple[float, object]:
    out, best = None, float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def run_one(x: torch.Tensor, k: int, iters: int, repeats: int, threads: int) -> dict:
    import faiss
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from pqlib.quantize import kmeans

    n, d = x.shape
    init = kmeans(x, k, iters=0, seed=0).points  # the k-means++ seeding alone
    x_np, init_np = x.numpy(), init.numpy()

    def pq():
        return kmeans(x, k, iters=iters, tol=None, init=init).points

    def sk():
        with threadpool_limits(limits=threads):
            km = KMeans(k, init=init_np, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd",
                        copy_x=True).fit(x_np)
        return km

    def fa():
        km = faiss.Kmeans(d, k, niter=iters, max_points_per_centroid=n + 1, min_points_per_centroid=1,
                          seed=0, verbose=False, spherical=False, update_index=False)
        km.train(x_np, init_centroids=init_np)
        return km.centroids

    t_pq, p_pq = best_time(pq, repeats)
    t_sk, km_sk = best_time(sk, repeats)
    t_fa, p_fa = best_time(fa, repeats)
    flops = 2.0 * n * k * d * iters

    def distortion(points) -> float:
        return kmeans(x.double(), k, iters=0, init=torch.as_tensor(points).double()).distortion

    return {
        "N": n, "d": d, "K": k, "iters": iters, "sk_iters": int(km_sk.n_iter_),
        "pqlib_s": t_pq, "sklearn_s": t_sk, "faiss_s": t_fa,
        "pqlib/faiss": t_pq / t_fa, "sklearn/pqlib": t_sk / t_pq,
        "pqlib_GFLOPs": flops / t_pq / 1e9, "sklearn_GFLOPs": flops / t_sk / 1e9,
        "faiss_GFLOPs": flops / t_fa / 1e9,
        "D_pqlib": distortion(p_pq), "D_sklearn": distortion(km_sk.cluster_centers_),
        "D_faiss": distortion(p_fa),
    }


def to_markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    fmt = {"pqlib_s": "{:.3f}", "sklearn_s": "{:.3f}", "faiss_s": "{:.3f}",
           "pqlib/faiss": "{:.2f}", "sklearn/pqlib": "{:.2f}", "pqlib_GFLOPs": "{:.1f}",
           "sklearn_GFLOPs": "{:.1f}", "faiss_GFLOPs": "{:.1f}", "D_pqlib": "{:.5g}",
           "D_sklearn": "{:.5g}", "D_faiss": "{:.5g}"}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def environment(threads: int) -> str:
    import faiss
    import sklearn
    from threadpoolctl import threadpool_info

    blas = sorted({f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})"
                   for i in threadpool_info() if i["user_api"] == "blas"})
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return (f"threads={threads}; torch {torch.__version__} (MKL={torch.backends.mkl.is_available()}), "
            f"scikit-learn {sklearn.__version__}, faiss {faiss.__version__}; BLAS loaded: "
            f"{', '.join(blas)}; {platform.processor() or platform.machine()}; env {env or 'clean'}; "
            f"load average {os.getloadavg()[0]:.2f} (other processes share the {os.cpu_count()} cores)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"only {QUICK}")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write the table to this .md or .csv file")
    args = p.parse_args(argv)

    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    configs = QUICK if args.quick else [(n, d, k) for n in GRID_N for d in GRID_D for k in GRID_K]
    data = {}
    rows = []
    run_one(mnist_pixels(2000, 196), 10, 2, 1, args.threads)  # warm up every library
    for n, d, k in configs:
        if (n, d) not in data:
            data[(n, d)] = mnist_pixels(n, d)
        load = os.getloadavg()[0]
        row = run_one(data[(n, d)], k, args.iters, args.repeats, args.threads)
        row["load1"] = round(load, 2)  # 1-min load average before the row: > threads = shared CPU
        rows.append(row)
        print(f"N={n} d={d} K={k}: pqlib {row['pqlib_s']:.3f}s sklearn {row['sklearn_s']:.3f}s "
              f"faiss {row['faiss_s']:.3f}s", file=sys.stderr, flush=True)
    table = to_markdown(rows)
    print(environment(args.threads))
    print(table)
    target = [r for r in rows if (r["N"], r["d"], r["K"]) == (60000, 196, 50)]
    if target:
        r = target[0]
        ok = r["pqlib/faiss"] <= 1.2 and r["sklearn/pqlib"] >= 1.5
        print(f"acceptance (N=60000, d=196, K=50): pqlib/faiss = {r['pqlib/faiss']:.2f} (<= 1.2), "
              f"sklearn/pqlib = {r['sklearn/pqlib']:.2f} (>= 1.5): {'PASS' if ok else 'FAIL'}")
    if args.out:
        if args.out.endswith(".csv"):
            import csv

            with open(args.out, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        else:
            with open(args.out, "w") as f:
                f.write(f"{environment(args.threads)}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

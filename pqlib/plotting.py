"""Figures: one seaborn theme for the book and small plotting helpers."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import NullLocator

__all__ = ["set_theme", "loglog_fit", "image_grid", "w2_per_class", "pipeline", "show_run",
           "accuracy_vs_ipc", "paired_differences", "w2_gain", "stage_cost"]


def set_theme() -> None:
    """The book's look: seaborn ``whitegrid``, ``colorblind`` palette, compact figures."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind",
                  rc={"figure.figsize": (6.4, 4.2), "figure.dpi": 110, "axes.titlesize": "medium"})


def loglog_fit(ax, k, y, *, label: str | None = None, color=None, marker: str = "o") -> float:
    """Plot ``y`` against ``k`` on log–log axes with its least-squares line; return the slope.

    Parameters
    ----------
    ax : matplotlib Axes
    k, y : array-like of shape (n,), positive
        E.g. the number of quantization points and the distortion.
    label : legend label; the fitted slope is appended to it
    color, marker : passed to matplotlib

    Returns
    -------
    slope : float
        The slope of log y against log k (for a distortion ∝ K^{-2/d}, slope = −2/d).
    """
    k, y = np.asarray(k, dtype=float), np.asarray(y, dtype=float)
    if k.shape != y.shape or k.ndim != 1 or len(k) < 2:
        raise ValueError(f"k and y must be 1-D of the same length >= 2, got shapes {k.shape} and {y.shape}")
    if (k <= 0).any() or (y <= 0).any():
        raise ValueError("k and y must be positive for a log-log fit")
    slope, intercept = np.polyfit(np.log(k), np.log(y), 1)
    text = f"slope {slope:.2f}"
    (line,) = ax.plot(k, y, marker=marker, linestyle="none", color=color,
                      label=f"{label} ({text})" if label else text)
    grid = np.geomspace(k.min(), k.max(), 50)
    ax.plot(grid, np.exp(intercept) * grid**slope, linestyle="--", linewidth=1,
            color=line.get_color())
    ax.set(xscale="log", yscale="log")
    ax.set_xticks(k, labels=[f"{v:g}" for v in k])  # the K values themselves, no 10^x
    ax.xaxis.set_minor_locator(NullLocator())
    return float(slope)


def accuracy_vs_ipc(df, *, order=None, anchors=None):
    """Test accuracy (%) against images per class on a log axis, mean ± sd over seeds, one line
    per method variant (its legend label gives the seeds per IPC, ``n = 5/5/3``; the variants
    are drawn slightly apart around each IPC so that their error bars stay visible); soft labels
    left, hard labels right. ``df`` comes from :func:`pqlib.results.load_records`; ``anchors``
    (``paper_reported()["mnist_anchors"]``, hard labels, ``"mean ± sd"`` cells) are drawn on the
    hard-label panel as grey markers labelled *paper-reported*. Returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    n = df.groupby(["variant", "ipc"]).seed.nunique()
    names = {v: f"{v} (n = {'/'.join(map(str, n[v]))})" for v in [*(order or []), *sorted(set(df.variant))] if v in n}
    ticks = sorted(set(df.ipc) | ({1, 10, 50} if anchors is not None else set()))
    shifted = df.assign(variant=df.variant.map(names), ipc=df.ipc * df.variant.map(
        {v: 1.05 ** (i - (len(names) - 1) / 2) for i, v in enumerate(names)}))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), layout="tight")
    for (method, row), marker in zip(anchors.iterrows() if anchors is not None else (), "sPX*Dv"):
        mean, sd = zip(*(map(float, cell.split(" ± ")) for cell in row))
        axes[1].errorbar([int(c.split()[1]) for c in row.index], mean, sd, marker=marker, linestyle="none",
                         color="0.45", capsize=2, label=f"{method} (paper-reported)")
    for ax, kind in zip(axes, ("soft", "hard")):
        sns.lineplot(shifted, x="ipc", y=f"acc_{kind}", hue="variant", hue_order=list(names.values()),
                     errorbar="sd", err_style="bars", marker="o", ax=ax)
        ax.set(xscale="log", xticks=ticks, xticklabels=ticks, xlabel="images per class (log scale)", ylabel=f"test accuracy (%), {kind} labels")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.legend(fontsize=7, ncol=2)
    return fig


def paired_differences(diffs):
    """Forest plot of :func:`pqlib.compare.paired_differences`: per question and IPC the mean
    difference A − B (points) with its interval, one panel per label kind; intervals that
    exclude zero are drawn in the accent colour. Returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = {(r.A, r.B, r.ipc): f"{r.A} − {r.B} · IPC {r.ipc} (n = {r.n})" for r in diffs.drop_duplicates(["A", "B", "ipc"]).itertuples()}
    fig, axes = plt.subplots(1, diffs["labels"].nunique(), figsize=(11, 1.3 + 0.3 * len(rows)),
                             sharey=True, squeeze=False, layout="tight")
    for ax, (kind, sub) in zip(axes[0], diffs.groupby("labels", sort=False)):
        y = [list(rows).index(key) for key in zip(sub.A, sub.B, sub.ipc)]
        ax.errorbar(sub["diff"], y, xerr=sub.hi - sub["diff"], fmt="none", ecolor="0.35", capsize=3)
        ax.scatter(sub["diff"], y, color=[sns.color_palette("colorblind")[3 if hit else 0] for hit in sub.excludes_zero], zorder=3)
        ax.axvline(0, color="0.3", linewidth=1)
        ax.set(title=f"{kind} labels", xlabel="A − B, test accuracy (points), 95 % interval", yticks=range(len(rows)),
               yticklabels=rows.values(), ylim=(len(rows) - 0.5, -0.5))
    return fig


def w2_gain(points, rho):
    """Scatter of :func:`pqlib.compare.w2_gain`: W2 reduction by the weights (%) against the
    accuracy gain over uniform weights (points), one point per run, with Spearman's ρ and n in
    the title. Returns the Axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    ax = sns.scatterplot(points.astype({"ipc": str}), x="reduction_pct", y="gain", hue="variant", style="ipc", s=60,
                         alpha=0.7, ax=plt.subplots(figsize=(6.4, 4.2))[1])
    ax.axhline(0, color="0.3", linewidth=1)
    ax.set(xlabel="W2 lower with the weights than with uniform weights (%)", ylabel="accuracy gain over uniform weights (points)",
           title=f"Spearman ρ = {rho:.2f}, n = {len(points)} runs" if rho == rho else f"n = {len(points)} runs; ρ undefined (no variation)")
    return ax


def stage_cost(stages):
    """Horizontal bars (log scale) of the median seconds of each distillation stage, of the whole
    distillation and of each student, one group per method variant and IPC with its number of
    runs; ``stages`` is :func:`pqlib.results.stage_table`. Returns the Axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = stages.rename(columns={"distill": "distill (total)"}).reset_index().melt(["variant", "ipc", "runs"], var_name="part", value_name="seconds").query("seconds > 0")
    long["run"] = long.variant + " · IPC " + long.ipc.astype(str) + " (n = " + long.runs.astype(str) + ")"
    _, ax = plt.subplots(figsize=(7.5, 1.0 + 0.45 * long.run.nunique()))
    sns.barplot(long, y="run", x="seconds", hue="part", ax=ax)
    ax.set(xscale="log", ylabel="", xlabel="median wall time (s, log scale)")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title=None)
    return ax


def image_grid(distilled, *, max_per_class: int = 10, size: float = 0.9, weights: bool = True):
    """Distilled images as a grid: one column per class, one row per image, each image's
    weight within its class written under it.

    Parameters
    ----------
    distilled : a :class:`~pqlib.distilled.DistilledSet` (images (M, C, H, W) in [0, 1])
    max_per_class : rows shown (the first images of each class)
    size : inches per image
    weights : annotate images with their weights

    Returns
    -------
    the matplotlib Figure
    """
    import matplotlib.pyplot as plt

    classes = distilled.classes
    per_class = [np.flatnonzero(distilled.labels.numpy() == c)[:max_per_class]
                 for c in range(len(classes))]
    rows = max(1, max(len(p) for p in per_class))
    fig, axes = plt.subplots(rows, len(classes), figsize=(size * len(classes), size * rows * 1.15),
                             squeeze=False, gridspec_kw={"wspace": 0.05, "hspace": 0.35})
    for c, idx in enumerate(per_class):
        for r, ax in enumerate(axes[:, c]):
            ax.set(xticks=[], yticks=[])
            ax.grid(False)
            ax.spines[:].set_visible(False)
            if r >= len(idx):
                continue
            img = distilled.images[idx[r]].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
            if weights:
                ax.set_xlabel(f"{float(distilled.weights[idx[r]]):.2f}", fontsize=7, labelpad=1)
            if r == 0:
                ax.set_title(str(classes[c]), fontsize=9)
    return fig


def w2_per_class(w2, *, classes, title: str = ""):
    """Bar chart of per-class W2 with the set's weights against uniform weights.

    ``w2`` is a :class:`~pqlib.report.W2` with per-class values, e.g. from
    :func:`pqlib.methods.common.feature_w2`. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    weighted, uniform = (np.asarray(v, dtype=float)
                         for v in (w2.per_class_weighted, w2.per_class_uniform))
    x = np.arange(len(weighted))
    fig, ax = plt.subplots(figsize=(6.4, 3.0), layout="tight")
    ax.bar(x - 0.2, uniform, width=0.4, label=f"uniform weights (mean {uniform.mean():.3f})")
    ax.bar(x + 0.2, weighted, width=0.4, label=f"the set's weights (mean {weighted.mean():.3f})")
    ax.set(xticks=x, xticklabels=[str(c) for c in list(classes)[: len(x)]], xlabel="class", ylabel="$W_2$", title=title)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def pipeline(steps: list[str], *, title: str = "", highlight: tuple[int, ...] = ()):
    """A left-to-right box-and-arrow diagram of a method's stages.

    Parameters
    ----------
    steps : box labels, in order (a newline breaks a label)
    title : figure title
    highlight : indices of boxes drawn in the accent colour (what the method adds)

    Returns
    -------
    the matplotlib Figure
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    colors = sns.color_palette("colorblind")
    n = len(steps)
    fig, ax = plt.subplots(figsize=(1.55 * n + 0.4, 1.5), layout="tight")
    ax.set(xlim=(0, n), ylim=(0, 1))
    ax.axis("off")
    for i, text in enumerate(steps):
        color = colors[1] if i in highlight else colors[0]
        ax.text(i + 0.5, 0.5, text, ha="center", va="center", fontsize=8.5,
                bbox={"boxstyle": "round,pad=0.45", "facecolor": (*color, 0.18),
                      "edgecolor": color, "linewidth": 1.2})
        if i < n - 1:
            ax.annotate("", xy=(i + 1.08, 0.5), xytext=(i + 0.92, 0.5),
                        arrowprops={"arrowstyle": "->", "color": "0.3", "linewidth": 1.2})
    ax.set_title(title, fontsize=10)
    return fig


def show_run(variant: str, ipc: int, *, seed: int = 0, root=None, max_per_class: int = 10):
    """Show the distilled images of a finished run with a summary of its record.

    Finds the run with :func:`pqlib.results.find_run` (paper, then quick, then smoke profile),
    draws its :func:`image_grid` and prints its W2 figures, accuracies and provenance. Without
    a run at ``ipc``, shows the largest other IPC that has one (saying so), or prints a hint
    when the variant has no run at all. Returns the Figure or ``None``.
    """
    import matplotlib.pyplot as plt

    from .distilled import DistilledSet
    from .results import find_run, provenance_line

    # the requested IPC, else the largest other IPC that has a run (e.g. the smoke profile's)
    k, found = next(((k, run) for k in [ipc, *(k for k in (100, 50, 20, 10, 5, 2, 1) if k != ipc)]
                     if (run := find_run(variant, k, seed=seed, root=root)) is not None), (ipc, None))
    if found is None:
        print(f"No run of {variant!r} (seed {seed}) yet: `make book` runs the sweep that makes it.")
        return None
    if k != ipc:
        print(f"No run of {variant!r} at IPC {ipc} yet; showing IPC {k}.")
    record, folder = found
    fig = image_grid(DistilledSet.load(folder), max_per_class=max_per_class)
    plt.show()
    if w2 := record.get("w2"):
        print(f"W2 in the method's {w2.get('space', '')} space: {w2['weighted']:.4f} with the "
              f"weights, {w2['uniform']:.4f} uniform ({w2['reduction_pct']:.1f} % lower)")
    if fw2 := record.get("feature_w2"):
        print(f"W2 in teacher feature space: {fw2['weighted']:.3f} (weighted), {fw2['uniform']:.3f} (uniform)")
    print("student test accuracy:",
          ", ".join(f"{k} labels {v:.2f} %" for k, v in (record.get("accuracy") or {}).items()))
    print(provenance_line(record))
    return fig


def show_images(images, nrow: int, row_labels=None, col_labels=None, ax=None):
    """Images as one grid of ``nrow`` columns, drawn into a single Axes.

    Parameters
    ----------
    images : tensor or array of shape (N, C, H, W), values in [0, 1], C = 1 (grey) or 3 (RGB);
        image ``i`` goes to row ``i // nrow``, column ``i % nrow``
    nrow : images per row; the grid has ``ceil(N / nrow)`` rows (the last one may be short)
    row_labels : sequence of str of length ``ceil(N / nrow)``, optional, written left of the rows
    col_labels : sequence of str of length ``nrow``, optional, written above the columns
    ax : matplotlib Axes, optional; default a new figure of 0.8 inch per image

    Returns
    -------
    the matplotlib Axes
    """
    import matplotlib.pyplot as plt

    x = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=np.float32)
    n, c, h, w = x.shape
    rows = -(-n // nrow)
    grid = np.ones((rows * (h + 1) - 1, nrow * (w + 1) - 1, c), dtype=np.float32)  # 1-px gaps
    for i, image in enumerate(x):
        top, left = (i // nrow) * (h + 1), (i % nrow) * (w + 1)
        grid[top : top + h, left : left + w] = image.transpose(1, 2, 0)
    if ax is None:
        ax = plt.subplots(figsize=(0.8 * nrow, 0.8 * rows))[1]
    ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([j * (w + 1) + (w - 1) / 2 for j in range(nrow)] if col_labels else [],
                  list(col_labels or []), fontsize=9)
    ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(rows)] if row_labels else [],
                  list(row_labels or []))
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.grid(False)
    ax.spines[:].set_visible(False)
    return ax

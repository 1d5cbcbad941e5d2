"""Figures: one seaborn theme for the book and small plotting helpers."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import NullLocator

__all__ = ["set_theme", "loglog_fit", "image_grid", "w2_per_class", "pipeline", "show_run",
           "error_vs_k", "stage_bars"]


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
    k = np.asarray(k, dtype=float)
    y = np.asarray(y, dtype=float)
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
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(k, labels=[f"{v:g}" for v in k])  # the K values themselves, no 10^x
    ax.xaxis.set_minor_locator(NullLocator())
    return float(slope)


def error_vs_k(df, *, kind: str = "soft", variants=None, ax=None):
    """Test error (100 − accuracy, %) against images per class on log–log axes, one line per
    method variant with its fitted slope. ``df`` comes from :func:`pqlib.results.load_records`.
    Returns the Axes."""
    import matplotlib.pyplot as plt

    col = f"acc_{kind}"
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2))
    variants = variants or sorted(df.variant.unique())
    for v in variants:
        sub = df[df.variant == v].groupby("ipc")[col].mean().dropna()
        if len(sub) >= 2:
            loglog_fit(ax, sub.index.to_numpy(float), (100 - sub).to_numpy(float), label=v)
    ax.set_xlabel("images per class K")
    ax.set_ylabel(f"test error (%), {kind} labels")
    ax.legend(fontsize=7, ncol=2)
    return ax


def stage_bars(stages, *, ax=None):
    """Stacked bars of distillation wall time per stage (rows: variant/IPC, columns: stages,
    e.g. :func:`pqlib.results.stage_table` without its ``distill`` total). Returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 3.6))
    parts = stages.drop(columns=[c for c in ("distill",) if c in stages.columns]).fillna(0)
    labels = [f"{v} · {int(k)}" for v, k in parts.index]
    bottom = np.zeros(len(parts))
    for col in parts.columns:
        ax.bar(labels, parts[col].to_numpy(), bottom=bottom, label=col)
        bottom += parts[col].to_numpy()
    ax.set_ylabel("seconds")
    ax.set_xlabel("method · IPC")
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    ax.legend(fontsize=7)
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

    classes = list(distilled.classes)
    per_class = [np.flatnonzero(distilled.labels.numpy() == c)[:max_per_class] for c in range(len(classes))]
    rows = max(1, max(len(p) for p in per_class))
    fig, axes = plt.subplots(rows, len(classes), figsize=(size * len(classes), size * rows * 1.15),
                             squeeze=False)
    for c, idx in enumerate(per_class):
        for r in range(rows):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if r >= len(idx):
                continue
            img = distilled.images[idx[r]].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
            if weights:
                ax.set_xlabel(f"{float(distilled.weights[idx[r]]):.2f}", fontsize=7, labelpad=1)
            if r == 0:
                ax.set_title(str(classes[c]), fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.35)
    return fig


def w2_per_class(w2, *, classes, title: str = ""):
    """Bar chart of per-class W2 with the set's weights against uniform weights.

    ``w2`` is a :class:`~pqlib.report.W2` with per-class values, e.g. from
    :func:`pqlib.methods.common.feature_w2`. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    weighted = np.asarray(w2.per_class_weighted, dtype=float)
    uniform = np.asarray(w2.per_class_uniform, dtype=float)
    x = np.arange(len(weighted))
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    ax.bar(x - 0.2, uniform, width=0.4, label=f"uniform weights (mean {uniform.mean():.3f})")
    ax.bar(x + 0.2, weighted, width=0.4, label=f"the set's weights (mean {weighted.mean():.3f})")
    ax.set_xticks(x, [str(c) for c in list(classes)[: len(x)]])
    ax.set_xlabel("class")
    ax.set_ylabel("$W_2$")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
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
    fig, ax = plt.subplots(figsize=(1.55 * n + 0.4, 1.5))
    ax.set_xlim(0, n)
    ax.set_ylim(0, 1)
    ax.axis("off")
    for i, text in enumerate(steps):
        color = colors[1] if i in highlight else colors[0]
        ax.text(i + 0.5, 0.5, text, ha="center", va="center", fontsize=8.5,
                bbox={"boxstyle": "round,pad=0.45", "facecolor": (*color, 0.18),
                      "edgecolor": color, "linewidth": 1.2})
        if i < n - 1:
            ax.annotate("", xy=(i + 1.08, 0.5), xytext=(i + 0.92, 0.5),
                        arrowprops={"arrowstyle": "->", "color": "0.3", "linewidth": 1.2})
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
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
    for k in [ipc] + [k for k in (100, 50, 20, 10, 5, 2, 1) if k != ipc]:
        found = find_run(variant, k, seed=seed, root=root)
        if found is not None:
            break
    if found is None:
        print(f"No run of {variant!r} (seed {seed}) yet: `make book` runs the sweep that makes it.")
        return None
    if k != ipc:
        print(f"No run of {variant!r} at IPC {ipc} yet; showing IPC {k}.")
    record, folder = found
    fig = image_grid(DistilledSet.load(folder), max_per_class=max_per_class)
    plt.show()
    w2 = record.get("w2")
    if w2:
        print(f"W2 in the method's {w2.get('space', '')} space: {w2['weighted']:.4f} with the "
              f"weights, {w2['uniform']:.4f} uniform ({w2['reduction_pct']:.1f} % lower)")
    fw2 = record.get("feature_w2") or {}
    if fw2:
        print(f"W2 in teacher feature space: {fw2['weighted']:.3f} (weighted), {fw2['uniform']:.3f} (uniform)")
    acc = ", ".join(f"{k} labels {v:.2f} %" for k, v in (record.get("accuracy") or {}).items())
    print(f"student test accuracy: {acc}")
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

    if hasattr(images, "detach"):  # a torch tensor
        images = images.detach().cpu().numpy()
    x = np.asarray(images, dtype=np.float32)
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

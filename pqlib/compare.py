"""Comparisons read from result records: paired differences over seeds, DD-Ranking's scores,
W2 against accuracy, and the book's summary of what was found.

Every function takes the DataFrame of :func:`pqlib.results.load_records` (one row per run,
accuracies ``acc_<kind>`` in percent) and is pure: the same records give the same numbers.
Differences are in percentage points; DD-Ranking's scores are computed on accuracies in [0, 1].
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["QUESTIONS", "questions", "paired_differences", "significance", "dd_ranking",
           "full_data_accuracy", "w2_gain", "findings"]

# A − B: the weights (Voronoi, √, none), the quantizer, the decoder's strength, the
# cross-family variants (a barycenter in DDOQ's latent space, Voronoi masses in WMDD's)
QUESTIONS = (("ddoq", "d4m"), ("ddoq-sqrt", "d4m"), ("ddoq-clvq", "ddoq"), ("wmdd", "wmdd-uniform"),
             ("ddoq-barycenter", "ddoq"), ("wmdd-voronoi", "wmdd"), ("ddoq-strength0.5", "ddoq"),
             ("ddoq-strength0.9", "ddoq"))


def questions(df: pd.DataFrame, order=()) -> list[tuple[str, str]]:
    """:data:`QUESTIONS`, then every variant of ``df`` minus ``random`` (same labels, same
    seed), variants in ``order`` first."""
    return [*QUESTIONS, *((v, "random") for v in dict.fromkeys([*order, *sorted(set(df.variant))])
                          if v in set(df.variant) - {"random"})]


def paired_differences(df: pd.DataFrame, pairs=None, kind: str = "soft", *,
                       level: float = 0.95) -> pd.DataFrame:
    """Test accuracy of variant A minus variant B, paired by seed, per IPC, with a paired-t
    interval.

    Parameters
    ----------
    df : records (:func:`pqlib.results.load_records`)
    pairs : ``[(A, B), ...]``, default :func:`questions`; pairs without a common seed are skipped
    kind : which student: ``"soft"``, ``"hard"`` (column ``acc_<kind>``)
    level : confidence level of the two-sided interval

    Returns
    -------
    DataFrame with one row per (A, B, IPC): ``A, B, labels, ipc, n`` (seeds both have),
    ``a, b`` (their mean accuracies over those seeds, %), ``diff`` (mean of A − B, points),
    ``lo, hi`` (mean ± t · sd / √n, t the (1 + level) / 2 quantile of Student's t with n − 1
    degrees of freedom, points; NaN when n < 2), ``excludes_zero`` and ``commits`` (the short
    commits of the paired records, A's then B's where they differ: the code each side ran).
    """
    from scipy import stats

    col = f"acc_{kind}"
    acc = df.dropna(subset=[col]).pivot_table(index=["ipc", "seed"], columns="variant", values=col)
    short = df.commit.fillna("none").str[:7] if "commit" in df else "none"
    code = df.assign(short=short).groupby(["variant", "ipc", "seed"]).short.first()
    rows = []
    for a, b in pairs or questions(df):
        for ipc, d in (acc[a] - acc[b]).dropna().groupby(level="ipc") if {a, b} <= set(acc) else ():
            half = stats.t.ppf((1 + level) / 2, len(d) - 1) * d.std() / math.sqrt(len(d)) if len(d) > 1 else math.nan
            rows.append({"A": a, "B": b, "labels": kind, "ipc": int(ipc), "n": len(d),
                         "a": acc.loc[d.index, a].mean(), "b": acc.loc[d.index, b].mean(),
                         "diff": d.mean(), "lo": d.mean() - half, "hi": d.mean() + half,
                         "excludes_zero": bool(d.mean() - half > 0 or d.mean() + half < 0),
                         "commits": " / ".join(dict.fromkeys(", ".join(sorted(
                             {code[v, i, s] for i, s in d.index})) for v in (a, b)))})
    return pd.DataFrame(rows, columns=["A", "B", "labels", "ipc", "n", "a", "b", "diff", "lo", "hi",
                                       "excludes_zero", "commits"])


def significance(diffs: pd.DataFrame, level: float = 0.95) -> str:
    """One sentence saying which intervals of :func:`paired_differences` exclude zero."""
    hits = diffs[diffs.excludes_zero]
    listed = "; ".join(f"{r.A} − {r.B}, {r.labels} labels, IPC {r.ipc}: {r.diff:+.2f} "
                       f"[{r.lo:+.2f}, {r.hi:+.2f}] points (n = {r.n})" for r in hits.itertuples())
    return (f"Of {len(diffs)} paired differences, {diffs.lo.notna().sum()} have a {level * 100:g} % "
            "interval (at least two seeds); " + (f"{len(hits)} of these exclude zero — {listed}; the "
                                                 "others include it." if len(hits) else "none excludes zero."))


def full_data_accuracy(df: pd.DataFrame, root: str | Path | None = None) -> tuple[float, str]:
    """The full-data, hard-label test accuracy (%) that DD-Ranking's HLR subtracts from, and
    where it came from: the mean of ``accuracy_hard`` in ``<root>/benchmarks/full_data.json``
    (``root`` default :func:`pqlib.results.results_root`) when that file exists, else — a
    stand-in, and said so — the mean teacher accuracy stored in the records."""
    from .results import results_root

    path = Path(root or results_root()) / "benchmarks" / "full_data.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    runs = doc.get("accuracy_hard")
    if not runs:
        return (float(df.teacher_accuracy.mean()), "a stand-in: the soft-label teacher's test "
                "accuracy (ConvNet-BN trained on all the data), read from the records")
    epochs = sorted({r.get("epochs") for r in doc.get("rows", [])})
    return (float(np.mean(runs)), "a ConvNet-3 trained with hard labels on all the training data "
            f"(benchmarks/full_data.py; epochs {epochs}), mean of {len(runs)} run"
            + "s" * (len(runs) != 1))


def dd_ranking(df: pd.DataFrame, full_hard: float, *, lam: float = 0.5,
               gamma: float = 0.5) -> pd.DataFrame:
    """DD-Ranking's scores per variant and IPC (Li et al., 2025, ``ddranking`` 0.2), on
    accuracies in [0, 1], each seed paired with the ``random`` run of the same seed and IPC.

    .. math::

        \\mathrm{HLR} = a^{\\mathrm{hard}}_{\\mathrm{full}} - a^{\\mathrm{hard}}_{\\mathrm{syn}},\\quad
        \\mathrm{IOR} = a^{\\mathrm{soft}}_{\\mathrm{syn}} - a^{\\mathrm{soft}}_{\\mathrm{rand}},\\quad
        \\mathrm{LRS} = \\frac{e^{\\lambda \\mathrm{IOR} - (1-\\lambda)\\mathrm{HLR}} - e^{-1}}{e - e^{-1}},\\quad
        \\mathrm{ARS} = \\frac{e^{\\gamma \\mathrm{IOR} + (1-\\gamma)\\mathrm{IOR}_{\\text{no aug}}} - e^{-1}}{e - e^{-1}}

    with :math:`\\lambda = \\gamma = 0.5`; the exponents lie in [−1, 1], so LRS and ARS lie in
    [0, 1]. ``full_hard`` is the full-data hard-label accuracy in % (:func:`full_data_accuracy`).
    ``IOR_no aug`` uses the students without augmentation (``acc_soft_noaug``); without them
    ARS is NaN.

    Returns
    -------
    DataFrame indexed by (variant, ipc): ``n`` (seeds paired with random), the means over
    those seeds of ``HLR``, ``IOR`` (fractions, not %), ``LRS``, ``ARS``, and ``LRS_sd``.
    """
    cols = ["acc_hard", "acc_soft", "acc_soft_noaug"]
    x = df.reindex(columns=["variant", "ipc", "seed", *cols])
    x = x.merge(x[x.variant == "random"].drop(columns="variant"), on=["ipc", "seed"], suffixes=("", "_rand"))
    gain = (x[cols].to_numpy() - x[[f"{c}_rand" for c in cols]].to_numpy()) / 100  # syn − random
    x = x.assign(HLR=full_hard / 100 - x.acc_hard / 100, IOR=gain[:, 1])
    norm = lambda e: (np.exp(e) - math.exp(-1)) / (math.e - math.exp(-1))  # noqa: E731
    x = x.assign(LRS=norm(lam * x.IOR - (1 - lam) * x.HLR), ARS=norm(gamma * x.IOR + (1 - gamma) * gain[:, 2]))
    return x.groupby(["variant", "ipc"]).agg(n=("seed", "count"), HLR=("HLR", "mean"), IOR=("IOR", "mean"),
                                             LRS=("LRS", "mean"), LRS_sd=("LRS", "std"), ARS=("ARS", "mean"))


def w2_gain(df: pd.DataFrame, kind: str = "soft") -> tuple[pd.DataFrame, float]:
    """How much the weights lower W2 against how much they change accuracy.

    One point per run of a weighted variant that has a uniform-weight partner with the same
    seed and IPC (``ddoq``, ``ddoq-sqrt`` and ``ddoq-barycenter`` against ``d4m``, ``wmdd`` and
    ``wmdd-voronoi`` against ``wmdd-uniform``): ``reduction_pct`` (the method's own W2 with its
    weights below W2 with uniform weights on the same points, %) and ``gain`` (accuracy minus
    the partner's, points).
    Returns the points (``variant, ipc, seed, reduction_pct, gain``) and Spearman's ρ over them
    (NaN with fewer than three points or a constant coordinate).
    """
    from scipy import stats

    pairs = [("ddoq", "d4m"), ("ddoq-sqrt", "d4m"), ("ddoq-barycenter", "d4m"), ("wmdd", "wmdd-uniform"),
             ("wmdd-voronoi", "wmdd-uniform")]
    diffs = paired_differences(df, pairs, kind)
    acc = df.set_index(["variant", "ipc", "seed"]).sort_index()  # lexsorted: fast, no warning
    pts = pd.DataFrame([{"variant": a, "ipc": ipc, "seed": s, "reduction_pct": acc.w2_reduction_pct[a, ipc, s],
                         "gain": acc[f"acc_{kind}"][a, ipc, s] - acc[f"acc_{kind}"][b, ipc, s]}
                        for a, b, ipc in diffs[["A", "B", "ipc"]].itertuples(index=False)
                        for s in sorted(set(acc.loc[(a, ipc)].index) & set(acc.loc[(b, ipc)].index))],
                       columns=["variant", "ipc", "seed", "reduction_pct", "gain"])
    varied = len(pts) >= 3 and pts.reduction_pct.nunique() > 1 and pts.gain.nunique() > 1
    return pts, float(stats.spearmanr(pts.reduction_pct, pts.gain)[0]) if varied else math.nan


def findings(df: pd.DataFrame, *, full_hard: float | None = None) -> str:
    """The book's "What we found", in Markdown, every number read from the records ``df``: per
    IPC and label kind the best method and random real images (mean ± sd over seeds, n seeds),
    whether the weights change accuracy (``ddoq − d4m`` and ``wmdd − wmdd-uniform``, 95 %
    paired intervals), which paired intervals of :func:`questions` exclude zero, and the highest
    label-robust score (:func:`dd_ranking` with ``full_hard`` %, default
    :func:`full_data_accuracy`)."""
    if df.empty:
        return "*No reference records yet: `pqlib sweep --profile paper` makes them.*"
    acc = (df.melt(["variant", "ipc"], ["acc_soft", "acc_hard"], "labels", "acc").dropna()
           .groupby(["ipc", "labels", "variant"]).acc.agg(avg="mean", sd="std", n="count").reset_index())
    best, rand = acc.loc[acc.groupby(["ipc", "labels"])["avg"].idxmax()], acc[acc.variant == "random"].set_index(["ipc", "labels"])
    cell = lambda r: f"**{r.variant}** {r.avg:.2f}{f' ± {r.sd:.2f}' if r.n > 1 else ''} % (n = {r.n})"  # noqa: E731
    diffs = pd.concat([paired_differences(df, questions(df), kind) for kind in ("soft", "hard")])
    scores = dd_ranking(df, full_data_accuracy(df)[0] if full_hard is None else full_hard).dropna(subset=["LRS"])
    return "\n".join(
        [f"From {len(df)} runs ({df.variant.nunique()} methods at IPC "
         f"{', '.join(str(k) for k in sorted(df.ipc.unique()))}; mean ± sd over seeds, n seeds):", ""]
        + [f"- IPC {r.ipc}, {r.labels[4:]} labels: best {cell(r)}" + (
           " — random real images; no distilled set beats them" if r.variant == "random" else f"; vs "
           f"{cell(rand.loc[r.ipc, r.labels])}" if (r.ipc, r.labels) in rand.index else "") + "."
           for r in best.sort_values(["ipc", "labels"], ascending=[True, False]).itertuples()]
        + [f"- Weights on − off, {r.A} − {r.B}, soft labels, IPC {r.ipc}: {r.diff:+.2f} points, "
           + (f"95 % interval [{r.lo:+.2f}, {r.hi:+.2f}]" if r.n > 1 else "one seed, no interval") + f" (n = {r.n})"
           + (" — identical by construction at IPC 1 (one point of mass 1 per class)." if r.ipc == 1 else ".")
           for r in diffs.query("labels == 'soft' and A in ['ddoq', 'wmdd'] and B in ['d4m', 'wmdd-uniform']").itertuples()]
        + [f"- {significance(diffs)}"]
        + [f"- Highest DD-Ranking label-robust score: **{v}** at IPC {ipc}, LRS = {scores.LRS[v, ipc]:.3f} "
           f"(n = {scores.n[v, ipc]})." for v, ipc in scores.LRS.nlargest(1).index])

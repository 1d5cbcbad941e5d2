# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   mystnb:
#     execution_mode: force
# ---

# %% [markdown]
# # Results
#
# Every number on this page is read from the result records of this repository (one JSON file
# per run, written by the experiment notebook; {doc}`runs` shows the executed notebooks) when
# the book is built: nothing is copied by hand. The figures and tables use the **reference
# run** (`profile: paper`, records committed in `results/paper/`: MNIST, IPC 1 / 10 / 50,
# seeds 0–4 at IPC 1 and 10 and 0–2 at IPC 50, the published protocols). The run is resumable
# and committed as it completes, so every figure and table works with the records that exist
# and says how many seeds (n) stand behind each cell. The records of **this build** (the
# `quick` profile of `make book`, or `smoke` in CI: one seed, short protocols, for checking the
# pipeline) are summarised at the end.
#
# Numbers from the papers are marked *paper-reported*; they were not measured here.

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from pqlib import compare, plotting, results, sweep

plotting.set_theme()
ROOT = results.results_root()
paper = results.load_records(ROOT / "paper") if (ROOT / "paper").is_dir() else pd.DataFrame()
build = results.load_records(ROOT)
ref = paper if not paper.empty else build  # the figures' records: the reference run if any
order = results.method_order()


def caption(text):
    """A figure's caption, with the provenance of the records behind it."""
    commits = ", ".join(sorted({c[:10] for c in ref.commit.dropna()})) or "none recorded"
    display(Markdown(f"*{text}* Records: {len(ref)} runs of profile "
                     f"{', '.join(sorted(ref.profile.unique()))}, commit {commits}, "
                     f"{', '.join(sorted(ref.cpu.dropna().unique()))}."))


print(f"reference run: {len(paper)} records; this build: {len(build)} records "
      f"({', '.join(sorted(build.profile.unique())) if len(build) else 'none'})")

# %% [markdown]
# ## The records and their provenance
#
# ConvNet-3 students are trained on each distilled set and tested on the 10,000 MNIST test
# images. *Soft labels*: KL to the ConvNet-BN teacher's temperature-20 soft labels on every
# augmented batch (the D4M / RDED protocol, `fkd`). *Hard labels*: cross-entropy on the class
# labels under `dc`, the published DC/DSA/DM evaluation ({doc}`protocols` lists every knob and
# its calibration). The run, from `pqlib/profiles/paper.yaml`:

# %% tags=["hide-input"]
display(Markdown("> " + sweep.load_profile("paper").description))
if not ref.empty:
    display(results.provenance_table(ref).T)  # one column per profile: fits the page

# %% [markdown]
# The reference run was made over several sessions, so its records come from more than one
# commit; each keeps its own. Between the commits below, two changes alter what a method
# computes: `4c1bae4` seeds DDOQ's and D4M's decoding noise per class (seed + class, so that
# each class can run as its own task; every image changes, the distribution does not) and
# `a28c25b` computes WMDD's per-class BatchNorm statistics with BatchNorm's own kernel instead
# of `var_mean` (rounding-level differences). The other commits in between describe
# themselves as leaving outputs unchanged, and the regression tests hold them to it. Which
# code made each cell:

# %% tags=["hide-input"]
if not ref.empty and "commit" in ref:
    display(ref.assign(code=ref.commit.fillna("none").str[:7])
            .pivot_table(index="variant", columns="ipc", values="code",
                         aggfunc=lambda s: ", ".join(sorted(set(s))))
            .reindex([v for v in order if v in set(ref.variant)]).fillna("–"))

# %% [markdown]
# **Do the records reproduce?** Records re-run from a clean checkout, at their own commit or at
# a later one, every stage computed again (`pqlib rerun --json`, reports in `results/reruns/`;
# Δ = re-run − recorded test accuracy, points; a record *reproduces* when both are within 0.5):

# %% tags=["hide-input"]
reruns = results.rerun_table(ROOT / "reruns")
display(reruns.round(2) if not reruns.empty else Markdown("*No re-run report yet.*"))

# %% [markdown]
# ## Accuracy against images per class
#
# Mean ± standard deviation over seeds; each legend entry gives the number of seeds at each
# IPC. The grey markers on the hard-label panel are the published MNIST numbers of the DC, DSA
# and DM papers under the same ConvNet-3 hard-label protocol (*paper-reported*).

# %% tags=["hide-input"]
reported = results.paper_reported()
if not ref.empty:
    plotting.accuracy_vs_ipc(ref, order=order, anchors=reported["mnist_anchors"])
    plt.show()
    caption("Test accuracy of ConvNet-3 students against images per class (log axis), soft "
            "labels (left) and hard labels (right), mean ± sd over seeds.")
    for kind in ("soft", "hard"):
        display(Markdown(f"**Test accuracy (%), {kind} labels, mean ± sd over seeds** "
                         "(`seeds`: n per cell, in column order when they differ)"))
        display(results.accuracy_table(ref, kind, order=order))

# %% [markdown]
# ## Paper-reported numbers
#
# **MNIST anchors** (ConvNet-3, hard labels, test %, as reported by the DC, DSA and DM papers
# and the benchmarks that repeat them). *Paper-reported, not measured here.*

# %% tags=["hide-input"]
reported["mnist_anchors"]

# %% [markdown]
# **DDOQ and its baselines on ImageNet-1K** (ResNet-18 teacher and student, top-1 %, soft
# labels). *Paper-reported, not measured here.*

# %% tags=["hide-input"]
reported["ddoq_imagenet"].astype(object).fillna("–")

# %% [markdown]
# **WMDD** (ResNet-18, top-1 %, mean ± std). *Paper-reported, not measured here.*

# %% tags=["hide-input"]
reported["wmdd"]

# %% [markdown]
# ## Paired differences: what changes accuracy?
#
# Each question compares two variants run with the **same seeds** (the same teacher, the same
# student initialisations and data order), so the difference is taken seed by seed and its
# 95 % interval is the paired *t* interval $\bar d \pm t_{0.975,\,n-1}\, s_d/\sqrt{n}$ over
# the n seeds both variants have. The questions: the weights (`ddoq − d4m`: Voronoi masses
# against uniform; `ddoq-sqrt − d4m`: the square-root heuristic; `wmdd − wmdd-uniform`: learned
# barycenter weights against equal ones), the quantizer (`ddoq-clvq − ddoq`: CLVQ against
# mini-batch k-means), the cross-family variants (`ddoq-barycenter − ddoq`, `wmdd-voronoi −
# wmdd`), the decoder's img2img strength at IPC 10 (`ddoq-strength0.5/0.9 − ddoq`, 0.7 being
# D4M's setting), and every method against random real images with the same labels. Rows
# without records are left out. At IPC 1 every weighting is the same (one point of mass 1 per
# class), so `ddoq`, `d4m` and `ddoq-sqrt` coincide there by construction. The `commits` column
# names the code each side ran (A's, then B's where they differ): the reference run was made
# over several sessions, so a row whose two sides ran different commits compares code states
# as well as variants (see *The records and their provenance* above).

# %% tags=["hide-input"]
diffs = pd.concat([compare.paired_differences(ref, compare.questions(ref, order), kind)
                   for kind in ("soft", "hard")]) if not ref.empty else pd.DataFrame()
if diffs.empty:
    display(Markdown("*No pair of variants with common seeds yet.*"))
else:
    plotting.paired_differences(diffs)
    plt.show()
    caption("Paired differences of test accuracy (percentage points) with 95 % paired-t "
            "intervals over seeds; orange: the interval excludes zero; n = seeds per row.")
    display(Markdown(compare.significance(diffs)))
    display(diffs.assign(
        question=diffs.A + " − " + diffs.B,
        interval=[f"[{lo:+.2f}, {hi:+.2f}]" if n > 1 else "–"
                  for lo, hi, n in zip(diffs.lo, diffs.hi, diffs.n)])
            .set_index(["question", "labels", "ipc"])[["n", "a", "b", "diff", "interval", "commits"]]
            .rename(columns={"a": "A (%)", "b": "B (%)", "diff": "A − B (points)",
                             "interval": "95 % interval"}).round(2))

# %% [markdown]
# ## DD-Ranking's scores
#
# DD-Ranking (NUS-HPC-AI-Lab, `ddranking` 0.2) separates what the distilled images carry from
# what soft labels and augmentation add. With accuracies as fractions in [0, 1]:
#
# - **HLR** (hard-label recovery) $= a^{\text{hard}}_{\text{full}} - a^{\text{hard}}_{\text{syn}}$:
#   how far hard-label training on the distilled set stays below training on all the data
#   (lower is better);
# - **IOR** (improvement over random) $= a^{\text{soft}}_{\text{syn}} - a^{\text{soft}}_{\text{rand}}$:
#   the gain over random real images of the same IPC under the *same* soft labels, teacher,
#   augmentation and protocol (here: the `random` run with the same seed);
# - **LRS** (label-robust score) $= \dfrac{e^{\lambda\,\text{IOR} - (1-\lambda)\,\text{HLR}} - e^{-1}}{e - e^{-1}}$
#   with $\lambda = 0.5$;
# - **ARS** (augmentation-robust score) $= \dfrac{e^{\gamma\,\text{IOR} + (1-\gamma)\,\text{IOR}_{\text{no aug}}} - e^{-1}}{e - e^{-1}}$
#   with $\gamma = 0.5$, where $\text{IOR}_{\text{no aug}}$ compares students trained without
#   augmentation (`fkd-noaug`, recorded at IPC 10 only; "–" where absent).
#
# On fractions the exponent lies in [−1, 1], so LRS and ARS lie in [0, 1]. The published
# implementation feeds **percentages** into the same formulas (its accuracies come from a
# validation loop in %), which makes the exponent range over ±100 and the scores
# incomparable; here they are computed on [0, 1]. Each score is computed per seed and averaged
# over the n seeds that have a `random` partner.

# %% tags=["hide-input"]
if not ref.empty:
    full_hard, source = compare.full_data_accuracy(ref)
    display(Markdown(f"Full-data hard-label accuracy $a^{{\\text{{hard}}}}_{{\\text{{full}}}}$ = "
                     f"{full_hard:.2f} %: {source}."))
    rank = {v: i for i, v in enumerate(order)}
    scores = compare.dd_ranking(ref, full_hard).sort_index(
        key=lambda ix: ix.map(lambda v: rank.get(v, len(rank))) if ix.name == "variant" else ix)
    display(scores.round(4).astype(object).where(scores.notna(), "–")
            .rename(columns={"LRS_sd": "LRS sd"}))

# %% [markdown]
# ## Do lower W2 and higher accuracy go together?
#
# DDOQ's argument is that the Voronoi weights lower the Wasserstein distance between the
# distilled measure and the data, and that a lower distance should mean a better student. Each
# point is one run of a weighted variant (`ddoq`, `ddoq-sqrt` against `d4m`; `wmdd` against
# `wmdd-uniform`): how much lower its own W2 is with its weights than with uniform weights on
# the same points, against its accuracy gain over the uniform-weight variant with the same seed.

# %% tags=["hide-input"]
points, rho = compare.w2_gain(ref) if not ref.empty else (pd.DataFrame(), float("nan"))
if points.empty:
    display(Markdown("*No weighted variant with a uniform-weight partner yet.*"))
else:
    plotting.w2_gain(points, rho)
    plt.show()
    caption(f"W2 reduction by the weights against accuracy gain over uniform weights, soft "
            f"labels; Spearman ρ = {rho:.2f} over n = {len(points)} runs "
            f"(IPC {', '.join(str(k) for k in sorted(points.ipc.unique()))})."
            if rho == rho else
            f"W2 reduction by the weights against accuracy gain, soft labels, n = {len(points)} "
            "runs; Spearman's ρ is undefined: neither coordinate varies (at IPC 1 both are 0).")

# %% [markdown]
# ## What it costs
#
# Median wall time over seeds of each distillation stage, of the whole distillation and of
# each student (training and testing), on the machine that made the records. Work cached per
# machine — the prior's encoding of the training set, the teacher's features, per-class
# BatchNorm statistics — is paid by the first run that needs it, hence the median; two sweep
# workers may share the two cores. DDOQ's weights are the cell counts k-means already has:
# compare the `quantize` and `decode` bars of `d4m` and `ddoq`.

# %% tags=["hide-input"]
if not ref.empty:
    stages = results.stage_table(ref)
    stages = stages.reindex([i for i in stages.index if i[0] in order]
                            + [i for i in stages.index if i[0] not in order])
    ax = plotting.stage_cost(stages)
    plt.show()
    caption("Median wall time (s, log axis) per distillation stage and per student; n = runs.")
    display(stages)

# %% [markdown]
# ## This build
#
# The records made by the sweep of this build (one seed, shorter protocol; see each run's
# notebook under {doc}`runs` for its parameters).

# %% tags=["hide-input"]
if build.empty:
    display(Markdown("*This build made no records.*"))
else:
    for kind in ("soft", "hard"):
        display(Markdown(f"**This build, {kind} labels (%)**"))
        display(results.accuracy_table(build, kind, order=order))
    display(results.provenance_table(build).T)

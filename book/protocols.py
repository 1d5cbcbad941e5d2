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
# # Evaluation protocols and their calibration
#
# Every accuracy in this book is "a fresh ConvNet-3 student trained on the distilled set under
# a protocol, tested once on the test split". A protocol is a value (`pqlib.protocols`): its
# every knob is stored in each result record, so two numbers are comparable exactly when their
# protocols are equal. The published MNIST numbers of random, herding and k-center come from
# the DC/DSA/DM evaluation; `dc` re-implements it, and a cheaper protocol may stand in for it
# only where it gives the same numbers.

# %% tags=["hide-input"]

import pandas as pd
from IPython.display import Markdown, display

from pqlib import plotting, results
from pqlib.protocols import PROTOCOLS

plotting.set_theme()
BENCH = results.results_root() / "benchmarks"
display(pd.DataFrame({name: p.as_dict() for name, p in PROTOCOLS.items()}).drop("name"))

# %% [markdown]
# `dc` follows `evaluate_synset` of the DC/DSA/DM code: standardised inputs, SGD with momentum
# 0.9 and weight decay 5e-4, batch 256, E + 1 = 1001 epochs, the learning rate divided by 10
# after epoch E/2 + 1 with a fresh optimiser, and DSA augmentation — one op group (colour,
# crop, cutout, scale or rotation; no flip on digits) drawn per batch, its parameters per image.
# `fkd` trains on the teacher's soft labels. `legacy-*` are the protocols of pqlib's first
# records (now in `results/legacy/`), kept so that those records can be re-run (`pqlib rerun`).
# The reference run trains under `dc` and `fkd`.
#
# ## Calibration on MNIST
#
# Random, herding and k-center selections, hard labels, under `dc` and the cheaper `dc300`,
# beside the published numbers (*paper-reported*); `fkd` is the random subset with the
# teacher's soft labels. Made by `benchmarks/protocol_mnist.py`, which resumes where it
# stopped; cells list their number of seeds in brackets.

# %% tags=["hide-input"]
calibration = BENCH / "protocol_mnist.md"
display(Markdown(calibration.read_text().split("\n", 1)[1] if calibration.exists()
                 else "*No calibration run yet: `python benchmarks/protocol_mnist.py`.*"))

# %% [markdown]
# ## Where the selections leave the published numbers
#
# Made by the same benchmark on the Intel machine (`protocol_mnist_followup.json`, three
# invocations, all `--protocols dc --no-soft`): random at IPC 1 with seeds 5-14 (seeds 0-4 are
# in the table above), and herding and k-center with their rules on raw pixels instead of the
# teacher's features (`-pixel` rows, IPC 1 and 10, seeds 0-2, beside the method's published
# numbers). Over its 15 seeds, random at IPC 1 stays about 8 points under the published mean,
# and herding is as far under it at IPC 1 and as far above it at IPC 10 on pixels as on
# features: the embedding does not explain the gaps. Still to measure: the coreset baselines
# under the evaluation of the DC paper itself, which predates DSA.

# %% tags=["hide-input"]
followup = BENCH / "protocol_mnist_followup.md"
display(Markdown(followup.read_text().split("\n", 1)[1] if followup.exists()
                 else "*Not run yet: see `benchmarks/protocol_mnist.py --help`.*"))

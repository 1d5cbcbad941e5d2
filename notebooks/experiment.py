# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # One distillation run
#
# This notebook is one *run* of the companion: it distills a dataset with one method at one
# number of images per class (IPC) and one seed, shows the distilled images with their
# weights, measures how far the weighted set is from the data in Wasserstein distance, trains
# a fresh ConvNet-3 student on it with the teacher's soft labels and with hard labels, and
# writes one result record. `pqlib sweep` executes it with papermill for every
# dataset × method × IPC × seed of a profile; the pages under *Runs* are those executions.

# %% tags=["remove-cell"]
# Colab: pip-install pqlib if it is missing, from repository.url in the book's _config.yml.
import importlib.util, pathlib, subprocess, sys, yaml  # noqa: E401, I001 (a 5-line cell)
cfgs = [p for p in map(pathlib.Path, ["_config.yml", "../_config.yml"]) if p.is_file()]
url = cfgs and yaml.safe_load(cfgs[0].read_text())["repository"]["url"]
if not importlib.util.find_spec("pqlib") and (url or print("pqlib: set repository.url in _config.yml")):
    subprocess.run([sys.executable, "-m", "pip", "install", f"pqlib @ git+{url}"], check=True)

# %% tags=["parameters"]
dataset = "mnist"          # mnist, digits, imagefolder:PATH, cifar10:PATH
method = "ddoq"            # random, herding, kcenter, dm, d4m, ddoq, wmdd
variant = None             # display name of the method variant (default: method)
options = {}               # method options, e.g. {"weights": "sqrt"}
ipc = 10                   # images per class
seed = 0
profile = "interactive"
student = "convnet"        # student architecture
teacher = "convnet_bn"     # soft-label teacher architecture
teacher_epochs = 0         # teacher training epochs; 0 means the pqlib default
hard_protocol = "dc300"    # hard-label student protocol (pqlib.protocols: dc, dc300, legacy-hard)
soft_protocol = "fkd"      # soft-label student protocol (fkd, legacy-soft)
noaug_protocol = ""        # also a soft-label student without augmentation ("fkd-noaug"; for ARS)
epochs = 0                 # override the protocols' epochs E; 0 keeps them
compile = "auto"           # torch.compile the students: True, False or "auto" (long runs)
soft_labels = True         # train a student with the teacher's soft labels
hard_labels = True         # train a student with hard labels
train_size = 0             # distill from the first N training images; 0 means all
test_size = 0              # evaluate on the first N test images; 0 means all
threads = 0                # torch threads; 0 keeps the default
reuse = True               # take stages other weightings computed from the stage cache
run_name = None
result_path = None         # where to write the result record; None writes nothing
distilled_dir = None       # where to save the distilled set; None saves nothing

# %%
import time

import matplotlib.pyplot as plt
import torch

import pqlib
from pqlib import plotting
from pqlib.methods.common import feature_w2
from pqlib.protocols import get_protocol
from pqlib.results import StudentResult, build_record, write_record
from pqlib.train import evaluate, train_student, train_teacher

if threads:
    torch.set_num_threads(threads)
variant = variant or method
plotting.set_theme()
run_start = time.perf_counter()

# %% [markdown]
# ## Data and teacher
#
# The teacher is trained once on the full training split and cached (MNIST's is shipped with
# pqlib); it labels the students' augmented batches and provides the feature space in which
# all methods are compared.

# %%
train = pqlib.load(dataset, "train")
test = pqlib.load(dataset, "test")
if train_size:
    train = train.subset(torch.arange(min(train_size, len(train))))
if test_size:
    test = test.subset(torch.arange(min(test_size, len(test))))
tch = train_teacher(dataset, teacher, epochs=teacher_epochs or None, progress=False)
print(f"{dataset}: {len(train)} training / {len(test)} test images {train.image_shape}; "
      f"teacher {tch.id}: {tch.accuracy:.2f} % test accuracy")

# %% [markdown]
# ## Distill

# %% [markdown]
# Variants that differ only in their weights (D4M, DDOQ and DDOQ-√ at the same seed; WMDD and
# WMDD-Voronoi) make the same images: the expensive stages (decoding, barycenters, synthesis)
# are computed once and reused from the stage cache (`reuse=True`), and the record names the
# stages that were reused (`pqlib rerun` sets `reuse=False`: a re-run computes every stage).

# %%
distilled = pqlib.distill(method, train, ipc, seed=seed, progress=False, reuse=reuse, **options)
report = distilled.report
print(f"{variant}: {len(distilled)} images in {report.wall_time_s:.1f} s; stages (s): "
      f"{report.stage_seconds or {}}; reused: {report.reused_stages or 'none'}")

# %% [markdown]
# Each column is a class; the number under an image is its training weight within its class
# (uniform weights are 1/IPC).

# %%
fig = plotting.image_grid(distilled, max_per_class=10)
plt.show()

# %% [markdown]
# ## How close is the weighted set to the data?
#
# Every method is measured in the teacher's feature space: for each class, the Wasserstein-2
# distance between the features of the real training images and those of the distilled images,
# with the set's weights and with uniform weights. Methods that quantize a latent space (D4M,
# DDOQ) or a feature space (WMDD) also report W2 in that space.

# %%
fw2 = feature_w2(tch, train, distilled)
if report.method_w2:
    space, own = report.method_w2
    print(f"W2 in the method's {space} space: weighted {own.weighted:.4f}, uniform "
          f"{own.uniform:.4f} ({own.reduction_pct:.1f} % lower with the weights)")
print(f"W2 in teacher feature space: weighted {fw2.weighted:.3f}, uniform {fw2.uniform:.3f}")
fig = plotting.w2_per_class(fw2, classes=train.classes,
                            title=f"{variant}, IPC {ipc}: feature-space W2")
plt.show()

# %% [markdown]
# ## Train students on the distilled set
#
# ConvNet-3 students, trained from scratch under a named evaluation protocol (every knob is
# printed below and stored in the record), each sample's loss multiplied by its weight; then
# tested once on the test split.

# %%
students = {}
kinds = ([("soft", tch, soft_protocol)] * bool(soft_labels)
         + [("hard", None, hard_protocol)] * bool(hard_labels)
         + [("soft_noaug", tch, noaug_protocol)] * bool(noaug_protocol))
for kind, labeller, name in kinds:
    protocol = get_protocol(name).replace(epochs=epochs or None)
    t0 = time.perf_counter()
    model = train_student(distilled, protocol, arch=student, teacher=labeller, seed=seed,
                          compile=compile, progress=False)
    s = students[kind] = StudentResult(evaluate(model, test), time.perf_counter() - t0,
                                       protocol, model.compiled)
    print(f"{kind} labels: {s.accuracy:.2f} % test accuracy ({s.seconds:.0f} s); "
          f"protocol {protocol}")

# %% [markdown]
# ## Result record

# %%
# the notebook parameters that re-create this run, as given (`pqlib rerun` passes them back)
parameters = {"dataset": dataset, "method": method, "variant": variant, "options": options,
              "ipc": ipc, "seed": seed, "profile": profile, "student": student,
              "teacher": teacher, "teacher_epochs": teacher_epochs, "epochs": epochs,
              "hard_protocol": hard_protocol, "soft_protocol": soft_protocol,
              "noaug_protocol": noaug_protocol, "compile": compile,
              "soft_labels": soft_labels, "hard_labels": hard_labels,
              "train_size": train_size, "test_size": test_size, "run_name": run_name}
record = build_record(parameters, distilled, students, teacher=tch, feature_w2=fw2,
                      train_size=len(train), test_size=len(test),
                      notebook_seconds=time.perf_counter() - run_start)
if distilled_dir:
    distilled.save(distilled_dir, overwrite=True)
if result_path:
    write_record(result_path, record)
{k: record[k] for k in ("accuracy", "w2", "feature_w2", "stage_seconds")}

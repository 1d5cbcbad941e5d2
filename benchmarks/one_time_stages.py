"""One-time stages against their floors, measured side by side in one run.

    python benchmarks/one_time_stages.py [--encode-images 10000] [--json OUT]

* per-class BatchNorm statistics of the MNIST teacher (WMDD), cold (no cache), against one
  plain teacher forward pass over the same 60,000 training images (same batches, float32);
* latent encoding with the shipped MNIST prior (``prior.encode``, D4M/DDOQ), against the bare
  VAE encoder called on the same batches.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv=None) -> None:
    import pqlib
    from pqlib.methods.wmdd import class_bn_statistics
    from pqlib.priors import load_prior
    from pqlib.provenance import provenance
    from pqlib.train import train_teacher

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encode-images", type=int, default=10_000)
    ap.add_argument("--json", help="also write the figures and provenance here")
    args = ap.parse_args(argv)
    train = pqlib.load("mnist", "train")
    teacher = train_teacher("mnist", progress=False)
    model = teacher.model.eval()
    out = {}

    with torch.no_grad():
        t0 = time.perf_counter()
        for c in range(train.num_classes):
            images = train.of_class(c)
            for i in range(0, len(images), 500):
                model(images[i : i + 500])
        out["teacher_forward_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for c in range(train.num_classes):
        class_bn_statistics(teacher, train.of_class(c))
    out["bn_statistics_s"] = time.perf_counter() - t0

    prior = load_prior("mnist")
    images = train.images[: args.encode_images]
    t0 = time.perf_counter()
    prior.encode(images, progress=False)
    out["encode_s"] = time.perf_counter() - t0
    with torch.no_grad():
        t0 = time.perf_counter()
        for i in range(0, len(images), 500):
            prior.vae.encode(prior.to_model_space(images[i : i + 500]))
        out["vae_encoder_s"] = time.perf_counter() - t0
    out = {k: round(v, 2) for k, v in out.items()}
    out["bn_over_forward"] = round(out["bn_statistics_s"] / out["teacher_forward_s"], 2)
    out["encode_over_encoder"] = round(out["encode_s"] / out["vae_encoder_s"], 2)
    out.update(images_bn=len(train), images_encode=len(images), threads=torch.get_num_threads())
    print(json.dumps(out, indent=1))
    if args.json:
        from pqlib.cache import atomic_write

        with atomic_write(args.json, "w") as f:
            json.dump({**out, **provenance()}, f, indent=1)


if __name__ == "__main__":
    main()

"""Quality bars of the MNIST latent diffusion prior, judged by the Foundation teacher.

Measures, with the prior from ``pqlib.priors.load_prior("mnist")`` (the shipped weights) and
the ConvNet-BN teacher from ``pqlib.train.train_teacher("mnist")``:

1. reconstructions — teacher accuracy on VAE reconstructions (strength 0) of the test images
   (bar: >= 98 %), beside its accuracy on the originals;
2. class-conditional samples — strength 1, ``--per-class`` per class: how often the teacher
   agrees with the conditioning class (bar: >= 95 %);
3. SDEdit from class means — each class's mean training latent decoded ``--per-class`` times
   at strength 0.7 with different noise: teacher agreement (bar: >= 95 %).

Usage::

    flock /tmp/pqlib-cpu.lock .venv/bin/python benchmarks/prior_quality.py            # full
    .venv/bin/python benchmarks/prior_quality.py --n-test 1000 --per-class 20         # quick

Prints one line per bar and a JSON summary (``--json PATH`` also writes it).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-test", type=int, default=10_000, help="test images to reconstruct (default all)")
    p.add_argument("--per-class", type=int, default=100, help="samples / SDEdits per class (default 100)")
    p.add_argument("--strength", type=float, default=0.7, help="SDEdit strength (default 0.7)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=None, help="default: the prior's (3.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the summary here")
    args = p.parse_args(argv)

    from pqlib.data import load
    from pqlib.priors import load_prior
    from pqlib.train import train_teacher

    prior = load_prior("mnist")
    teacher = train_teacher("mnist", "convnet_bn")
    model = teacher.model.eval()
    train, test = load("mnist", "train"), load("mnist", "test")
    test = test.subset(torch.arange(min(args.n_test, len(test))))

    @torch.no_grad()
    def agreement(images: torch.Tensor, labels: torch.Tensor) -> float:
        pred = torch.cat([model(images[i : i + 1000]).argmax(1) for i in range(0, len(images), 1000)])
        return 100.0 * (pred == labels).float().mean().item()

    out = {"prior": prior.id, "teacher": teacher.id, "teacher_test_accuracy": teacher.accuracy,
           "guidance": prior.default_guidance if args.guidance is None else args.guidance,
           "steps": args.steps, "seed": args.seed}
    t0 = time.perf_counter()

    # 1. reconstructions
    z = prior.encode(test.images)
    rec = prior.decode(z, test.labels, strength=0.0)
    out["n_test"] = len(test)
    out["original_accuracy"] = agreement(test.images, test.labels)
    out["reconstruction_accuracy"] = agreement(rec, test.labels)
    out["reconstruction_l1"] = (rec - test.images).abs().mean().item()
    t1 = time.perf_counter()

    # 2. class-conditional samples (strength 1)
    classes = torch.arange(train.num_classes).repeat_interleave(args.per_class)
    samples = prior.sample(classes, steps=args.steps, guidance=args.guidance, seed=args.seed)
    out["sample_agreement"] = agreement(samples, classes)
    per_class = [agreement(samples[classes == c], classes[classes == c]) for c in range(train.num_classes)]
    out["sample_agreement_per_class"] = [round(a, 1) for a in per_class]
    t2 = time.perf_counter()

    # 3. SDEdit from each class's mean latent (all training images of the class)
    zt = prior.encode(train.images)
    means = torch.stack([zt[train.labels == c].mean(0) for c in range(train.num_classes)])
    edits = prior.decode(means[classes], classes, strength=args.strength, steps=args.steps,
                         guidance=args.guidance, seed=args.seed)
    out["sdedit_strength"] = args.strength
    out["sdedit_agreement"] = agreement(edits, classes)
    out["sdedit_from_mean_plain_decode_agreement"] = agreement(
        prior.decode(means, torch.arange(train.num_classes), strength=0.0), torch.arange(train.num_classes))
    t3 = time.perf_counter()
    out["seconds"] = {"reconstructions": round(t1 - t0, 1), "samples": round(t2 - t1, 1),
                      "sdedit": round(t3 - t2, 1)}

    print(f"reconstructions: teacher accuracy {out['reconstruction_accuracy']:.2f} % on "
          f"{len(test)} test reconstructions (originals {out['original_accuracy']:.2f} %)  [bar >= 98 %]")
    print(f"samples (strength 1, {args.per_class}/class): teacher agreement "
          f"{out['sample_agreement']:.2f} %  [bar >= 95 %]")
    print(f"SDEdit s={args.strength} from class mean latents ({args.per_class}/class): teacher "
          f"agreement {out['sdedit_agreement']:.2f} %  [bar >= 95 %]")
    print(json.dumps(out, indent=1))
    if args.json:
        from pqlib.cache import atomic_write

        with atomic_write(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

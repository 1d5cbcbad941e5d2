"""Evaluation protocols: how a student is trained on a distilled set, as a named value.

Every accuracy in pqlib is "a fresh student trained under protocol P, tested once". A
:class:`Protocol` holds every knob of that training; its :meth:`~Protocol.as_dict` is stored in
each result record and printed in the book, so two numbers are comparable exactly when their
protocols are equal.

Named protocols (:data:`PROTOCOLS`, :func:`get_protocol`):

``dc``
    The published hard-label evaluation of the DC/DSA/DM benchmark (``evaluate_synset`` of
    VICO-UoE/DatasetCondensation): ConvNet-3 on mean/std-standardised images, SGD lr 0.01,
    momentum 0.9, weight decay 5e-4, batch 256, E + 1 = 1001 epochs, lr × 0.1 after epoch
    E/2 + 1 with a fresh optimiser (momentum reset), DSA augmentation (one op group per batch,
    parameters per image; no flip on 1-channel data), one test after the last epoch.
``dc300``
    ``dc`` with E = 300 (301 epochs, drop after epoch 151): the candidate cheaper reference;
    ``benchmarks/protocol_mnist.py`` measures it against ``dc``.
``dc-iclr21``
    ``dc`` with the augmentation of the DC paper itself (Zhao et al., ICLR 2021), which
    predates DSA and is what its coreset baselines (random, herding, k-center) could have been
    evaluated under: one of crop / scale / rotate per image (:func:`~pqlib.augment.dc_augment`;
    ``get_daparam``'s ``crop_scale_rotate`` for MNIST, with 1,000 epochs, as ``main.py`` sets
    when it augments).
``fkd``
    Soft labels (FKD / RDED / D4M): the teacher relabels every augmented, CutMix-ed batch; KL
    at temperature 20; AdamW lr 1e-3, weight decay 0.01, cosine schedule, 300 epochs, batch
    256; kornia affine + erasing augmentation on raw pixels (what the teacher was trained on).
    DSA's op groups (a half-image cutout, mean-grey fills) give the teacher images it labels
    badly: random IPC 10, 100 epochs, 96.5 % with this family against 86.5 % (DSA on raw
    pixels) and 89.8 % (DSA on standardised pixels).
``fkd-noaug``
    ``fkd`` without augmentation and without CutMix (the teacher labels the plain images): the
    "without augmentation" evaluation of DD-Ranking's augmentation-robust score (ARS).
``legacy-hard``, ``legacy-soft``
    pqlib's first protocols (records made before protocols existed): kornia affine + erasing
    augmentation, no standardisation, step-based schedules (hard: SGD, lr × 0.1 at half of the
    steps without a reset; soft: AdamW cosine + CutMix), epochs as recorded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .augment import DC_OPS, DSA_DEFAULT, DSA_OPS, dsa_strategy
from .checks import Int, InvalidParameter, OneOf, Real, check

__all__ = ["Protocol", "PROTOCOLS", "get_protocol", "protocol_from_record", "channel_stats",
           "DSA_DEFAULT", "DATASET_STATS"]

# per-channel (mean, std) the DC/DSA/DM code standardises with
DATASET_STATS = {"mnist": ((0.1307,), (0.3081,)),
                 "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))}


@dataclass(frozen=True)
class Protocol:
    """Every knob of a student training run.

    Attributes
    ----------
    name : the protocol's name (variants made by :meth:`replace` keep it, with their knobs)
    labels : ``"hard"`` (cross-entropy on the set's labels) or ``"soft"`` (teacher KL)
    optimizer : ``"sgd"`` or ``"adamw"``
    lr, momentum, weight_decay : optimiser settings (momentum: SGD only)
    schedule : ``"step-reset"`` (lr × 0.1 after epoch ``epochs // 2 + 1``, optimiser
        re-created; DC), ``"step"`` (lr × 0.1 at half of the steps, no reset; legacy) or
        ``"cosine"`` (per step, to 0)
    epochs : E, the nominal number of passes over the set
    extra_epoch : train E + 1 epochs, as ``evaluate_synset`` does
    batch_size : images per step (capped at the set size; the last batch of an epoch is kept)
    augmentation : ``"dsa"`` (DSA's default ops, flip dropped on 1-channel data),
        ``"dsa:<ops>"``, ``"dc:<ops>"`` (DC's one op per image, ops from ``DC_OPS``),
        ``"kornia"`` (legacy family) or ``"none"``
    standardize : feed the student images standardised by the dataset's mean and std
    cutmix : CutMix every batch (soft-label protocols)
    temperature : softmax temperature of the KL loss (soft labels)
    """

    name: str
    labels: str
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    schedule: str
    epochs: int
    extra_epoch: bool
    batch_size: int
    augmentation: str
    standardize: bool
    cutmix: bool
    temperature: float = 20.0

    def __post_init__(self):
        where = f"protocol {self.name!r}"
        for key, constraint in _FIELDS.items():
            check(key, getattr(self, key), constraint, where=where)
        kind, colon, ops = str(self.augmentation).partition(":")
        known = {"dsa": DSA_OPS, "dc": DC_OPS}.get(kind, ())
        ops_ok = (not colon and kind != "dc") or all(op in known for op in ops.split("_"))
        if kind not in ("dsa", "dc", "kornia", "none") or not ops_ok:
            raise InvalidParameter(f"{where}: augmentation={self.augmentation!r} should be 'dsa', "
                                   f"'kornia', 'none', 'dsa:<ops>' with ops from {DSA_OPS} or "
                                   f"'dc:<ops>' with ops from {DC_OPS}, ops joined by '_'")

    @property
    def total_epochs(self) -> int:
        """Epochs actually trained."""
        return self.epochs + int(self.extra_epoch)

    def dsa_strategy(self, channels: int) -> str | None:
        """The DSA op groups used on images with ``channels`` channels (None: not DSA)."""
        return (dsa_strategy(channels, self.augmentation.partition(":")[2] or DSA_DEFAULT)
                if self.augmentation.startswith("dsa") else None)

    def replace(self, **changes) -> Protocol:
        """A copy with some knobs changed (e.g. ``epochs=100``); ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict:
        """Every knob, JSON-ready (what result records store)."""
        return asdict(self)


# the accepted values of every field but ``name`` and ``augmentation`` (checked by hand)
_FIELDS = {"labels": OneOf("hard", "soft"), "optimizer": OneOf("sgd", "adamw"),
           "lr": Real(0, open_low=True), "momentum": Real(0, 1), "weight_decay": Real(0),
           "schedule": OneOf("step-reset", "step", "cosine"), "epochs": Int(1),
           "extra_epoch": bool, "batch_size": Int(1), "standardize": bool, "cutmix": bool,
           "temperature": Real(0, open_low=True)}

_DC = Protocol("dc", "hard", "sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
               schedule="step-reset", epochs=1000, extra_epoch=True, batch_size=256,
               augmentation="dsa", standardize=True, cutmix=False)
_FKD = Protocol("fkd", "soft", "adamw", lr=1e-3, momentum=0.0, weight_decay=0.01,
                schedule="cosine", epochs=300, extra_epoch=False, batch_size=256,
                augmentation="kornia", standardize=False, cutmix=True)

PROTOCOLS: dict[str, Protocol] = {
    "dc": _DC,
    "dc300": _DC.replace(name="dc300", epochs=300),
    "dc-iclr21": _DC.replace(name="dc-iclr21", augmentation="dc:crop_scale_rotate"),
    "fkd": _FKD,
    "fkd-noaug": _FKD.replace(name="fkd-noaug", augmentation="none", cutmix=False),
    "legacy-hard": _DC.replace(name="legacy-hard", schedule="step", epochs=300, extra_epoch=False,
                               augmentation="kornia", standardize=False),
    "legacy-soft": _FKD.replace(name="legacy-soft"),
}


def get_protocol(protocol: str | Protocol | dict) -> Protocol:
    """A :class:`Protocol` from its name, itself, or its :meth:`~Protocol.as_dict`."""
    if isinstance(protocol, Protocol):
        return protocol
    if isinstance(protocol, dict):
        known = {f.name for f in fields(Protocol)}
        unknown = sorted(set(protocol) - known)
        if unknown:
            raise InvalidParameter(f"protocol dict has unknown key(s) {unknown}; keys: {sorted(known)}")
        return Protocol(**protocol)
    if protocol not in PROTOCOLS:
        raise InvalidParameter(f"unknown protocol {protocol!r}; named protocols: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def protocol_from_record(record: dict, labels: str) -> Protocol:
    """The protocol a result record's ``labels`` student was trained under.

    Records store ``protocol[labels]``; records made before protocols existed were trained
    under ``legacy-<labels>`` with the record's ``epochs``.
    """
    stored = (record.get("protocol") or {}).get(labels)
    if stored:
        return get_protocol(stored)
    return PROTOCOLS[f"legacy-{labels}"].replace(epochs=record["parameters"].get("epochs"))


def channel_stats(dataset: str, images) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) to standardise images of ``dataset`` with: the DC constants of
    its kind (``DATASET_STATS``: ``mnist``, ``mnist:PATH``, ``cifar10:PATH``), else the
    statistics of ``images`` (N, C, H, W) themselves (std floored at 1e-3)."""
    kind = str(dataset or "").partition(":")[0]
    if kind in DATASET_STATS:
        return DATASET_STATS[kind]
    x = images.double()
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).clamp_min(1e-3).tolist())

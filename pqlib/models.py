"""Networks used as students, teachers and feature maps.

``convnet``     ConvNet-3 (Zhao et al.): 3 × [conv3×3 width → instance norm → ReLU → avgpool 2] → linear.
``convnet_bn``  the same with BatchNorm (teachers whose BN statistics WMDD matches).
``resnet18``    ResNet-18 for small inputs (3×3 stem, stride 1, no max-pool), BatchNorm.

Every model has ``features(x) -> (N, D)`` (the penultimate embedding) and
``classifier(features) -> logits``; ``forward = classifier ∘ features``.
"""

from __future__ import annotations

import functools
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from .checks import Int, InvalidParameter, OneOf, checked

__all__ = ["ConvNet", "ResNet18", "Standardized", "build", "ARCHITECTURES", "batchnorm_inputs"]


class FirstConv(nn.Conv2d):
    """A 3×3 convolution over few input channels; under ``torch.compile`` it runs as one
    matrix product over unfolded patches (im2col), which on CPUs is several times faster than
    oneDNN's convolution with 1–3 input channels. Eager mode is plain ``nn.Conv2d``, so eager
    results are unchanged; the parameters (and state dicts) are those of ``nn.Conv2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            return super().forward(x)
        n, _, h, w = x.shape
        pad = self.padding[0]
        cols = F.unfold(x, self.kernel_size, padding=pad)                 # (n, c·9, L)
        weight = self.weight.reshape(self.out_channels, -1).to(cols.dtype)
        out = torch.matmul(weight, cols) + self.bias.to(cols.dtype)[:, None]
        return out.view(n, self.out_channels, h + 2 * pad - 2, w + 2 * pad - 2)


class AvgPool2(nn.AvgPool2d):
    """2×2 average pooling (``nn.AvgPool2d(2)``). Eagerly, on even-sided inputs, it runs as one
    matrix product of each pair of rows with a fixed (2W, W/2) matrix of 0.25s: on CPUs 2–4×
    faster than ``avg_pool2d`` (forward and backward) and, as the products by 0.25 are exact,
    equal to it bit for bit in float32 and bfloat16 (``tests/test_models.py``). Under
    ``torch.compile`` it is plain ``avg_pool2d`` (the compiler fuses it)."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if torch.compiler.is_compiling() or h % 2 or w % 2:
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):  # keep x's dtype, as avg_pool2d does
            return x.reshape(n, c, h // 2, 2 * w) @ _pool_matrix(w, x.dtype, x.device)


@functools.cache
def _pool_matrix(w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(2W, W/2): column j averages columns 2j, 2j+1 of two stacked rows of width W."""
    m = torch.zeros(2 * w, w // 2, dtype=dtype, device=device)
    i = torch.arange(w, device=device)
    m[i, i // 2] = m[w + i, i // 2] = 0.25
    return m


class Standardized(nn.Module):
    """``net`` fed ``(x - mean) / std`` per channel: a student trained on standardised inputs
    that still takes [0, 1] images (``evaluate`` and users see raw pixels)."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(self.standardize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardize(x))


#: the normalisation layers (none or one) after each conv of a ConvNet, by ``norm``
_NORMS = {"instance": lambda width: [nn.GroupNorm(width, width, affine=True)],
          "batch": lambda width: [nn.BatchNorm2d(width)], "none": lambda width: []}


class _Classifier(nn.Module):
    """A network with ``features(x) -> (N, feature_dim)`` and a linear ``classifier`` on them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ConvNet(_Classifier):
    """ConvNet-D of the dataset-distillation literature.

    Parameters
    ----------
    channels : input channels (1 or 3)
    num_classes : output classes
    image_size : input side length (≥ 8; a 28×28 input is padded to 32×32 by the first conv)
    width : channels of every conv layer, default 128
    depth : number of conv blocks, default 3
    norm : ``"instance"`` (GroupNorm with one group per channel), ``"batch"`` or ``"none"``
    """

    def __init__(self, channels: int, num_classes: int, image_size: int, *, width: int = 128,
                 depth: int = 3, norm: str = "instance"):
        super().__init__()
        if norm not in _NORMS:
            raise InvalidParameter(f"norm={norm!r} should be one of 'instance', 'batch', 'none'")
        layers, size = [], image_size
        for d in range(depth):
            pad = 3 if (d == 0 and image_size == 28) else 1
            conv = FirstConv if d == 0 else nn.Conv2d
            layers += [conv(channels if d == 0 else width, width, 3, padding=pad),
                       *_NORMS[norm](width), nn.ReLU(inplace=True)]
            size = size + 2 * pad - 2
            if size >= 2:
                layers.append(AvgPool2())
                size //= 2
        self.body = nn.Sequential(*layers)
        self.feature_dim = width * size * size
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, feature_dim)."""
        return self.body(x).flatten(1)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Sequential())

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(_Classifier):
    """ResNet-18 for small images: 3×3 stem with stride 1 and no max-pool; 512-d features."""

    def __init__(self, channels: int, num_classes: int, image_size: int, *, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        blocks, cin = [], width
        for mult, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            blocks += [_BasicBlock(cin, width * mult, stride), _BasicBlock(width * mult, width * mult, 1)]
            cin = width * mult
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(self.stem(x))).flatten(1)


ARCHITECTURES = {
    "convnet": lambda c, k, s: ConvNet(c, k, s, norm="instance"),
    "convnet_bn": lambda c, k, s: ConvNet(c, k, s, norm="batch"),
    "resnet18": lambda c, k, s: ResNet18(c, k, s),
}


@checked(channels=OneOf(1, 3), num_classes=Int(1), image_size=Int(8))
def build(arch: str, channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build an untrained network by name (see ``ARCHITECTURES``) for ``channels`` × ``image_size``
    × ``image_size`` inputs (1 or 3 channels, side ≥ 8)."""
    if arch not in ARCHITECTURES:
        raise InvalidParameter(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](channels, num_classes, image_size)


@contextmanager
def batchnorm_inputs(model: nn.Module):
    """Context manager recording the input of every BatchNorm2d layer of ``model``.

    Inside the block, ``.layers`` lists the BN layers in module order and ``.inputs`` their
    latest input tensors, with gradients attached; the hooks are removed on exit. Used for
    BN-statistics matching (WMDD).

    >>> with batchnorm_inputs(model) as rec:  # doctest: +SKIP
    ...     model(x); means = [t.mean((0, 2, 3)) for t in rec.inputs]
    """
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    rec = SimpleNamespace(layers=layers, inputs=[None] * len(layers))

    def keep(i: int):
        return lambda module, args, output: rec.inputs.__setitem__(i, args[0])

    with ExitStack() as hooks:  # each hook handle is removed on exit
        for i, layer in enumerate(layers):
            hooks.enter_context(layer.register_forward_hook(keep(i)))
        yield rec

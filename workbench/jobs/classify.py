"""Image classifiers trained by kinds whose result is a classifier's accuracy (augmentation, attribution).

- `build_classifier`: the small CNN (also the reference classifier of jobs.metrics.reference)
  or a torchvision ResNet18 adapted to small images (3x3 stem, no max-pool), trained from scratch.
- `train_classifier`: a fixed number of AdamW steps with one-cycle learning rate, random shifts (and
  flips where asked), seeded, bf16 autocast on CUDA. A fixed step count, not epochs: settings that
  differ in dataset size get the same compute, so a difference is not bought with more training.
- `assess`: mean cross-entropy (the risk) and accuracy on a labelled set, and the softmax confidences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

Arch = Literal["cnn", "resnet18"]
FEATURES = 128  # the small CNN's penultimate width (the reference classifier's features)


@dataclass(frozen=True)
class ClassifierConfig:
    arch: Arch = "cnn"
    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    shifts: bool = True  # random shifts of up to 1/8 of the side
    flips: bool = False  # random horizontal flips (natural images, not digits)
    label_smoothing: float = 0.0
    mixed_precision: bool = True  # bf16 autocast on CUDA (the reference classifier trains in fp32)


@dataclass(frozen=True)
class Assessment:
    risk: float  # mean cross-entropy
    accuracy: float
    n: int
    confidence: np.ndarray  # softmax probability of the predicted class, per image
    predictions: np.ndarray


class ReferenceCNN(nn.Module):
    def __init__(self, channels: int, num_classes: int):
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(
            *block(channels, 32),
            *block(32, 32),
            nn.MaxPool2d(2),
            *block(32, 64),
            *block(64, 64),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(256, FEATURES),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURES, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def augment(x: torch.Tensor, g: torch.Generator, flip: bool) -> torch.Tensor:
    """Random shifts of up to 1/8 of the side (reflect-padded), and horizontal flips for natural images."""
    pad = max(1, x.shape[-1] // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=g))
    x = padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
    if flip:
        mask = (torch.rand(len(x), generator=g) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


def build_classifier(arch: Arch, channels: int, num_classes: int) -> nn.Module:
    if arch == "cnn":
        return ReferenceCNN(channels, num_classes)
    if arch == "resnet18":
        from torchvision.models import resnet18

        net = resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)  # small images: keep the resolution
        net.maxpool = nn.Identity()
        return net
    raise ValueError(f"classifier {arch!r}: use cnn or resnet18")


def train_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    cfg: ClassifierConfig,
    seed: int,
    device: torch.device | str,
    should_stop: Callable[[], bool] = lambda: False,
) -> nn.Module | None:
    """Train a fresh classifier on (x, y) for cfg.steps steps; None when a stop was asked for first."""
    from workbench.jobs.diffusion.train import autocast

    torch.manual_seed(seed)  # initial weights and dropout
    g = torch.Generator().manual_seed(seed)  # batches and augmentation
    net = build_classifier(cfg.arch, x.shape[1], num_classes).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps)
    x, y = x.to(device), y.to(device)
    batch = min(cfg.batch_size, len(x))
    net.train()
    for step in range(cfg.steps):
        if step % 50 == 0 and should_stop():
            return None
        idx = torch.randint(0, len(x), (batch,), generator=g).to(device)
        xb = x[idx]
        if cfg.shifts or cfg.flips:
            xb = augment(xb, g, flip=cfg.flips) if cfg.shifts else _flip(xb, g)
        with autocast(device, cfg.mixed_precision):
            loss = F.cross_entropy(net(xb).float(), y[idx], label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def _flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mask = (torch.rand(len(x), generator=g) < 0.5).to(x.device)
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


@torch.no_grad()
def assess(net: nn.Module, x: torch.Tensor, y: torch.Tensor, device, batch: int = 1000) -> Assessment:
    """Risk (mean cross-entropy) and accuracy of `net` on (x, y), in eval mode, no augmentation."""
    from workbench.jobs.diffusion.train import autocast

    losses, conf, preds = [], [], []
    for i in range(0, len(x), batch):
        xb, yb = x[i : i + batch].to(device), y[i : i + batch].to(device)
        with autocast(device):
            logits = net(xb).float()
        losses.append(F.cross_entropy(logits, yb, reduction="sum").item())
        p = logits.softmax(1)
        c, k = p.max(1)
        conf.append(c.cpu())
        preds.append(k.cpu())
    predictions = torch.cat(preds).numpy()
    return Assessment(
        risk=sum(losses) / len(x),
        accuracy=float((predictions == y.numpy()).mean()),
        n=len(x),
        confidence=torch.cat(conf).numpy(),
        predictions=predictions,
    )


# --- attribution backbones -------------------------------------------------------------------------

Backbone = Literal["patch_cnn", "resnet18", "resnet50", "spectrum"]
Front = Literal["none", "srm", "bayar"]

# the three SRM high-pass kernels of steganalysis (Fridrich and Kodovsky 2012), as used for
# manipulation traces (Zhou et al., CVPR 2018): second-order 3x3 ("KB"), 5x5 "KV", second-order row
_SRM = (
    [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]],
    [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
    [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
)
_SRM_SCALE = (4.0, 12.0, 2.0)


class HighPass(nn.Module):
    """A residual front end: the image minus what its neighbours predict, so the layers after it see the
    traces (a few grey levels) without the content (hundreds of levels) on top. `srm`: the fixed SRM
    kernels on each colour channel (9 maps); `bayar`: Bayar and Stamm's constrained convolution (2016),
    6 learnt 5x5 kernels per colour whose centre is -1 and whose other taps sum to 1, re-imposed at every
    forward pass. Batch norm after it, since residuals are small next to the normalised image."""

    def __init__(self, kind: Front):
        super().__init__()
        self.kind = kind
        if kind == "srm":
            k = torch.tensor(_SRM, dtype=torch.float32) / torch.tensor(_SRM_SCALE)[:, None, None]
            self.register_buffer("kernel", k[:, None].repeat(3, 1, 1, 1))  # (9, 1, 5, 5): 3 per colour
            self.maps = 9
        elif kind == "bayar":
            self.weight = nn.Parameter(torch.rand(18, 1, 5, 5) * 0.1 + 0.01)
            self.maps = 18
        else:
            raise ValueError(f"front {kind!r}: use srm or bayar")
        self.norm = nn.BatchNorm2d(self.maps)

    def constrained(self) -> torch.Tensor:
        centre = torch.zeros(1, 1, 5, 5, device=self.weight.device, dtype=torch.bool)
        centre[..., 2, 2] = True
        w = self.weight.masked_fill(centre, 0)
        w = w / w.sum((2, 3), keepdim=True).clamp_min(1e-6)
        return w.masked_fill(centre, -1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.kernel if self.kind == "srm" else self.constrained()
        return self.norm(F.conv2d(x, kernel.to(x.dtype), padding=2, groups=3))


class PatchCNN(nn.Module):
    """A small CNN for generator traces, trained from scratch on native-resolution patches: an optional
    high-pass front end, no pooling in its first two layers (the traces live in neighbouring pixels),
    then strided stages and a global average, so it takes a patch of any size."""

    def __init__(self, num_classes: int, width: int = 32, front: Front = "none"):
        super().__init__()

        def conv(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        w = width
        head = [] if front == "none" else [HighPass(front)]
        self.body = nn.Sequential(
            *head,
            *conv(3 if front == "none" else head[0].maps, w),
            *conv(w, w),
            *conv(w, 2 * w, 2),
            *conv(2 * w, 2 * w),
            *conv(2 * w, 4 * w, 2),
            *conv(4 * w, 4 * w),
            *conv(4 * w, 8 * w, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix D (n, n): D @ x is the DCT of a column x (scipy's dct, norm=ortho)."""
    i = torch.arange(n, dtype=torch.float64)
    d = torch.cos(torch.pi * (i[None, :] + 0.5) * i[:, None] / n) * (2 / n) ** 0.5
    d[0] /= 2**0.5
    return d.float()


class SpectrumLinear(nn.Module):
    """The spectral baseline (Frank et al., ICML 2020): the log magnitude of a patch's 2D DCT, of its
    grey levels, then a linear layer (a standardised logistic regression fitted by scikit-learn, the
    standardisation folded into the weights). Linear after the features, so the mean of a grid of
    patches' logits is the logits of the patches' mean spectrum. Takes ImageNet-normalised patches."""

    EPS = 1e-2  # grey levels: below a level's rounding, so flat patches stay finite and comparable

    def __init__(self, num_classes: int, patch: int):
        super().__init__()
        self.register_buffer("dct", dct_matrix(patch))
        self.register_buffer("mean", torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1))
        self.head = nn.Linear(patch * patch, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # bf16 would move the log of small bins
            return self._features(x.float())

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        grey = ((x * self.std + self.mean) * 255).mean(1)  # (B, S, S) grey levels
        if grey.shape[-1] != self.dct.shape[0] or grey.shape[-2] != self.dct.shape[0]:
            raise ValueError(f"the spectrum model takes {self.dct.shape[0]}-px patches, not {grey.shape}")
        spectrum = self.dct @ grey @ self.dct.T
        return torch.log(spectrum.abs() + self.EPS).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PretrainedUnavailable(ValueError):
    """ImageNet weights were asked for and cannot be had (offline and not cached)."""


def build_attributor(
    backbone: Backbone,
    num_classes: int,
    width: int = 32,
    pretrained: str = "none",
    front: Front = "none",
    patch: int = 64,
) -> nn.Module:
    """The patch CNN (with a high-pass `front`), the spectral baseline (on `patch`-px crops), or a
    torchvision ResNet (ImageNet stem) with a new head for num_classes.

    pretrained: none (from scratch); imagenet (torchvision's weights, from the local torch cache, or
    downloaded when the machine is online); or the path of a state dict (.pth or .safetensors) of the
    same architecture, whose classifier head is replaced."""
    if backbone in ("patch_cnn", "spectrum") and pretrained != "none":
        raise ValueError(f"the {backbone} model is trained from scratch: set pretrained: none")
    if backbone == "patch_cnn":
        return PatchCNN(num_classes, width, front)
    if backbone == "spectrum":
        return SpectrumLinear(num_classes, patch)
    from torchvision import models

    weights_enum = {"resnet18": models.ResNet18_Weights, "resnet50": models.ResNet50_Weights}[backbone]
    net = getattr(models, backbone)()
    if pretrained != "none":
        state = _backbone_state(backbone, weights_enum.IMAGENET1K_V1, pretrained)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the head is replaced
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as e:  # tensors of other shapes: another architecture's weights
            missing, unexpected = [str(e).splitlines()[1].strip()], []
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise PretrainedUnavailable(
                f"pretrained: {pretrained} is not a {backbone} state dict "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


def _backbone_state(backbone: str, weights, pretrained: str) -> dict:
    from pathlib import Path

    if pretrained == "imagenet":
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        try:
            return weights.get_state_dict(progress=False)
        except Exception as e:  # offline: urllib's URLError, a proxy's refusal
            raise PretrainedUnavailable(
                f"pretrained: imagenet: torchvision's ImageNet weights for {backbone} are not in the torch "
                f"cache ({cached}) and cannot be downloaded ({type(e).__name__}: {e}). Copy "
                f"{Path(weights.url).name} there, give pretrained the path of a state dict, or set "
                "pretrained: none"
            ) from None
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise PretrainedUnavailable(f"pretrained: {path} is not a file (give none, imagenet or a state dict)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)

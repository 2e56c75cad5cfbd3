"""A small VAE (diffusers' AutoencoderKL) trained on unlabelled images: a baseline representation.

The encoder's posterior mean, flattened, is the feature vector a probe sees. Training minimises the
per-pixel squared error plus `kl_weight` times the KL divergence per pixel (the ELBO of a Gaussian decoder,
up to constants), with AdamW and a fixed seed; no label is used. A trained VAE is cached under the store
per (images, spec, seed) with its loss history, so later runs reuse it and still show its curves.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from workbench.jobs.context import RunCancelled
from workbench.jobs.diffusion.train import autocast


@dataclass(frozen=True)
class VAEConfig:
    channels: tuple[int, ...] = (32, 64, 64)  # per encoder level; the latent is the image / 2**(levels-1)
    latent_channels: int = 4
    norm_groups: int = 8
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    kl_weight: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class TrainedVAE:
    model: torch.nn.Module  # diffusers AutoencoderKL, in eval mode
    history: list[dict[str, float]]  # one point per logged step: step, loss, reconstruction, kl
    reconstruction_mse: float  # on the test images, per pixel (images in [-1, 1])
    cached: bool


def build(cfg: VAEConfig, image_shape: tuple[int, int, int]):
    from diffusers import AutoencoderKL

    c, h, _ = image_shape
    levels = len(cfg.channels)
    return AutoencoderKL(
        in_channels=c,
        out_channels=c,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(cfg.channels),
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_groups,
        sample_size=h,
    )


def cache_path(folder: Path, images_fingerprint: str, cfg: VAEConfig) -> Path:
    """The VAE for these images and config in the cache folder (`ctx.cache_dir("vae")`)."""
    key = json.dumps({"images": images_fingerprint, **cfg.__dict__}, sort_keys=True, default=list)
    return Path(folder) / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.safetensors"


def train_or_load(
    folder: Path,
    images_fingerprint: str,
    x_train: torch.Tensor,
    x_test: torch.Tensor,
    cfg: VAEConfig,
    device,
    on_step: Callable[[int, dict[str, float]], None] = lambda step, losses: None,
    should_stop: Callable[[], bool] = lambda: False,
    log_every: int = 25,
) -> TrainedVAE:
    """The VAE for these images and config: from the cache, or trained now (and cached). `on_step` gets
    every logged point, replayed from the cache too; `should_stop` is asked every step (RunCancelled,
    caching nothing, when it says stop)."""
    from safetensors.torch import load_file, save_file

    path = cache_path(folder, images_fingerprint, cfg)
    meta_path = path.with_suffix(".json")
    torch.manual_seed(cfg.seed)  # the initial weights, when it is trained
    model = build(cfg, tuple(x_train.shape[1:]))
    if path.exists() and meta_path.exists():
        model.load_state_dict(load_file(path))
        meta = json.loads(meta_path.read_text())
        for point in meta["history"]:
            on_step(int(point["step"]), {k: v for k, v in point.items() if k != "step"})
        return TrainedVAE(model.to(device).eval(), meta["history"], meta["reconstruction_mse"], True)

    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    warmup = max(1, cfg.steps // 20)  # 5 % linear warm-up, then cosine decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps))
    )
    g = torch.Generator().manual_seed(cfg.seed)
    history, start = [], time.perf_counter()
    for step in range(1, cfg.steps + 1):
        if should_stop():
            raise RunCancelled
        x = x_train[torch.randint(0, len(x_train), (cfg.batch_size,), generator=g)].to(device)
        with autocast(device):
            posterior = model.encode(x).latent_dist
            recon = model.decode(posterior.sample(generator=None)).sample.float()
        reconstruction = F.mse_loss(recon, x)
        kl = posterior.kl().float().mean() / x[0].numel()
        loss = reconstruction + cfg.kl_weight * kl
        if not torch.isfinite(loss):
            raise FloatingPointError(f"VAE loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == cfg.steps:
            point = {"loss": loss.item(), "reconstruction": reconstruction.item(), "kl": kl.item()}
            history.append({"step": step, **point})
            on_step(step, point)
    model.eval()
    mse = reconstruction_error(model, x_test, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}, tmp)
    meta = {"history": history, "reconstruction_mse": mse, "seconds": time.perf_counter() - start}
    meta_path.write_text(json.dumps(meta))
    tmp.replace(path)  # last: a weights file exists only with its history beside it
    return TrainedVAE(model, history, mse, False)


@torch.no_grad()
def encode(model, images: torch.Tensor, device, batch_size: int = 512) -> np.ndarray:
    """The posterior means, flattened: (N, latent_channels * h * w) float32."""
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        out.append(model.encode(x).latent_dist.mean.float().flatten(1).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def reconstruct(model, images: torch.Tensor, device) -> torch.Tensor:
    """Decoded posterior means, in [-1, 1]."""
    x = images.to(device)
    return model.decode(model.encode(x).latent_dist.mean).sample.clamp(-1, 1).cpu()


@torch.no_grad()
def reconstruction_error(model, images: torch.Tensor, device, batch_size: int = 512) -> float:
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        total += float(((reconstruct(model, x, device) - x) ** 2).sum())
    return total / images.numel()

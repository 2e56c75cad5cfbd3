"""A trained denoiser's features: a UNet block's activations at noise level t, pooled (for probes).

x_0 is noised to x_t with a seeded draw, the denoiser runs once per t (a class-conditional model at its
null class) and forward hooks keep the output of every block asked for, so a sweep over T timesteps and
B blocks costs T forward passes over the images, not T x B. Nothing here takes a label: an image's
features cannot depend on what the dataset says it is.

Blocks are named in the order the UNet runs them: `down0` ... `down{n-1}`, `mid`, `up0` ... `up{n-1}`.
Pooling: `avg` (global average: one number per channel) or `grid{k}` (average over a k x k grid:
k*k numbers per channel, some of where things are).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from jobs.diffusion.schedules import q_sample


def block_names(model) -> list[str]:
    """The blocks of a UNetDenoiser, in the order they run."""
    unet = model.unet
    return [
        *(f"down{i}" for i in range(len(unet.down_blocks))),
        "mid",
        *(f"up{i}" for i in range(len(unet.up_blocks))),
    ]


def block(model, name: str) -> torch.nn.Module:
    if name == "mid":
        return model.unet.mid_block
    match = re.fullmatch(r"(down|up)(\d+)", name)
    blocks = model.unet.down_blocks if match and match[1] == "down" else model.unet.up_blocks
    if not match or int(match[2]) >= len(blocks):
        raise KeyError(f"no block {name!r}; this model has {', '.join(block_names(model))}")
    return blocks[int(match[2])]


def pool(h: torch.Tensor, pooling: str) -> torch.Tensor:
    """(N, C, H, W) -> (N, D) by `avg` or `grid{k}`."""
    if pooling == "avg":
        return h.mean(dim=(2, 3))
    match = re.fullmatch(r"grid(\d+)", pooling)
    if not match or int(match[1]) < 1:
        raise ValueError(f"pooling {pooling!r}: use avg or grid<k> (grid2, grid4, ...)")
    return torch.nn.functional.adaptive_avg_pool2d(h, int(match[1])).flatten(1)


@torch.no_grad()
def extract(
    model,
    schedule,
    images: torch.Tensor,
    timesteps: list[int],
    blocks: list[str],
    pooling: str = "avg",
    seed: int = 0,
    draws: int = 1,
    batch_size: int = 256,
) -> dict[tuple[int, str], np.ndarray]:
    """{(t, block): float32 array (N, D)} for `images` (N, C, H, W) in the model's range [-1, 1].

    Each (t, draw) noises all N images with one seeded draw (the same for every block and for any batch
    size); with draws > 1 the features are averaged over the draws. Cost: len(timesteps) * draws forward
    passes over the images, whatever the number of blocks.
    """
    device = next(model.parameters()).device
    modules = {name: block(model, name) for name in blocks}
    caught: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_module, _inputs, output):
            caught[name] = output[0] if isinstance(output, tuple) else output  # down blocks add their skips

        return hook

    handles = [m.register_forward_hook(keep(name)) for name, m in modules.items()]
    try:
        features: dict[tuple[int, str], np.ndarray] = {}
        for t in timesteps:
            sums: dict[str, list[torch.Tensor]] = {name: [] for name in blocks}
            for draw in range(draws):
                noise = torch.randn(
                    images.shape, generator=torch.Generator().manual_seed(_seed(seed, t, draw))
                )
                for start in range(0, len(images), batch_size):
                    x0 = images[start : start + batch_size].to(device)
                    tt = torch.full((len(x0),), t, dtype=torch.long, device=device)
                    model(q_sample(schedule, x0, tt, noise[start : start + batch_size].to(device)), tt)
                    for name in blocks:
                        pooled = pool(caught[name].float(), pooling).cpu()
                        if draw == 0:
                            sums[name].append(pooled)
                        else:
                            sums[name][start // batch_size] += pooled
            for name in blocks:
                features[(t, name)] = (torch.cat(sums[name]) / draws).numpy()
        return features
    finally:
        for h in handles:
            h.remove()


def _seed(seed: int, t: int, draw: int) -> int:
    return int(np.random.SeedSequence([seed, t, draw]).generate_state(1)[0])

"""Denoisers: eps_theta(x_t, t, y). Class id `num_classes` is the reserved null class for CFG."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (integer) timesteps, as in the Transformer and DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width)
        )

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return h + self.net(h + cond)


class MLPDenoiser(nn.Module):
    """A residual MLP for low-dimensional data with time and class embeddings (num_classes=0: unconditional)."""

    def __init__(
        self, dim: int = 2, width: int = 128, depth: int = 3, num_classes: int = 0, time_dim: int = 64
    ):
        super().__init__()
        self.num_classes = num_classes
        self.time_dim = time_dim
        self.inp = nn.Linear(dim, width)
        self.time = nn.Sequential(nn.Linear(time_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.label = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        # While sampling, t is one scalar for the whole batch: embed it once and broadcast.
        cond = self.time(timestep_embedding(t.reshape(-1).to(x.device), self.time_dim))
        if self.label is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.null_class, device=x.device, dtype=torch.long)
            cond = cond + self.label(y)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, cond)
        return self.out(h)


class UNetDenoiser(nn.Module):
    """diffusers' UNet2DModel as eps_theta(x_t, t, y): class-conditional through its class embedding
    with one extra (null) class for classifier-free guidance; num_classes=0 is unconditional."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        channels: tuple[int, ...],
        attention: tuple[bool, ...],
        layers_per_block: int = 2,
        dropout: float = 0.0,
        num_classes: int = 0,
        norm_groups: int = 8,
        attention_head_dim: int = 8,
    ):
        from diffusers import UNet2DModel

        super().__init__()
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)
        c, h, _w = image_shape
        self.unet = UNet2DModel(
            sample_size=h,
            in_channels=c,
            out_channels=c,
            block_out_channels=tuple(channels),
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
            layers_per_block=layers_per_block,
            dropout=dropout,
            norm_num_groups=norm_groups,
            attention_head_dim=attention_head_dim,
            num_class_embeds=num_classes + 1 if num_classes else None,
        )

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and y is None:
            y = torch.full((x.shape[0],), self.null_class, device=x.device, dtype=torch.long)
        t = t.reshape(-1).to(x.device)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        return self.unet(x, t, class_labels=y if self.num_classes else None).sample.to(x.dtype)

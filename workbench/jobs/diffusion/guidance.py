"""Classifier-free guidance (Ho & Salimans 2022).

Training drops labels to the null class with probability p; sampling mixes the two predictions:
eps = eps_uncond + w * (eps_cond - eps_uncond). w = 0 is the unconditional model, w = 1 the plain
conditional one, w > 1 sharpens. Those two special cases cost one pass; others batch both passes.
"""

from __future__ import annotations

import torch


def drop_labels(
    y: torch.Tensor, p: float, null_class: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    if p <= 0:
        return y
    drop = torch.rand(y.shape, device=y.device, generator=generator) < p
    return torch.where(drop, torch.full_like(y, null_class), y)


def passes(w: float, conditional: bool) -> int:
    """Network evaluations per sampling step."""
    return 2 if conditional and w not in (0.0, 1.0) else 1


def guided_eps(
    model, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, w: float, null_class: int | None
) -> torch.Tensor:
    if y is None or null_class is None:  # no labels, or no null class to guide from (callers refuse w != 1)
        return model(x, t, y)
    null = torch.full_like(y, null_class)
    if w == 0.0:
        return model(x, t, null)
    if w == 1.0:
        return model(x, t, y)
    eps_cond, eps_uncond = model(torch.cat([x, x]), t, torch.cat([y, null])).chunk(2)
    return eps_uncond + w * (eps_cond - eps_uncond)

"""Noise schedules and the forward process q(x_t | x_0), on top of diffusers' DDPMScheduler.

The training schedule is a diffusers scheduler config; every sampler is built from that same
config, so training and sampling can never disagree about the betas.
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers import DDPMScheduler

ScheduleName = Literal["linear", "cosine"]
_DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def make_schedule(
    name: ScheduleName,
    timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    clip_sample: bool = False,
) -> DDPMScheduler:
    """The training noise schedule (linear: Ho et al. 2020; cosine: Nichol & Dhariwal 2021).

    clip_sample (the predicted x_0 clipped to [-1, 1] while sampling, in the samplers that support
    it) is for images, whose pixels live there; it would distort 2D data.
    """
    return DDPMScheduler(
        num_train_timesteps=timesteps,
        beta_schedule=_DIFFUSERS_NAME[name],
        beta_start=beta_start,
        beta_end=beta_end,
        clip_sample=clip_sample,
        prediction_type="epsilon",
        variance_type="fixed_small",
    )


def q_sample(schedule: DDPMScheduler, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
    return schedule.add_noise(x0, noise, t)


def signal_to_noise(schedule: DDPMScheduler) -> torch.Tensor:
    abar = schedule.alphas_cumprod
    return abar / (1 - abar)

"""Sampling through diffusers schedulers, each configured from the model's training schedule."""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from workbench.jobs.context import alive
from workbench.jobs.diffusion.config import SamplerName
from workbench.jobs.diffusion.guidance import guided_eps, passes

# Samplers start no noisier than log-SNR -10.2 (diffusers' lambda_min_clipped = -5.1 for DPM-Solver, applied
# to every sampler). The linear schedule ends there anyway (abar_999 = 4.0e-5); the cosine schedule's last
# four steps take abar from 3.9e-5 down to 2.4e-9, where every sampler's first x_0 estimate,
# (x - sqrt(1 - abar) eps) / sqrt(abar), multiplies the network's error by up to 2e4. Measured on the 2D
# quickstart model trained with the cosine schedule, 20 steps: DDIM, DPM-Solver++ and UniPC samples
# landed thousands of units away (energy distance ~700-2400) without this bound.
MIN_LOG_SNR = -10.2


class NextTimestepDDIM(DDIMScheduler):
    """diffusers' DDIM steps from t to t - T // steps, one short of the next timestep in its own trailing
    list whenever steps does not divide T (T = 1000 at 30 steps: 966 -> 933, not 932; every count at the
    cosine schedule's T = 996). This DDIM steps to the next timestep in the list: the step reads T from
    its config once, so T is made gap * steps for the length of the call. Caught by the exact-Gaussian
    sampler tests (tests/test_exact_samplers.py)."""

    def step(self, model_output, timestep, sample, *args, **kwargs):
        from diffusers.configuration_utils import FrozenDict

        ts = [int(t) for t in self.timesteps]
        i = ts.index(int(timestep))
        gap = ts[i] - (ts[i + 1] if i + 1 < len(ts) else -1)
        config = self._internal_dict
        self._internal_dict = FrozenDict({**config, "num_train_timesteps": gap * self.num_inference_steps})
        try:
            return super().step(model_output, timestep, sample, *args, **kwargs)
        finally:
            self._internal_dict = config

    # `sample` passes eta, generator and use_clipped_model_output only to a step whose signature names
    # them: this one takes them all through to DDIM's
    step.__signature__ = inspect.signature(DDIMScheduler.step)


def sampling_timesteps(training: DDPMScheduler) -> int:
    """How many of the training timesteps the samplers use: all of them up to log-SNR >= MIN_LOG_SNR."""
    abar = training.alphas_cumprod.double()
    return max(2, int((torch.log(abar / (1 - abar)) >= MIN_LOG_SNR).sum()))


def make_sampler(name: SamplerName, training: DDPMScheduler, eta: float = 0.0):
    """A scheduler for `name` that shares the training betas (the first `sampling_timesteps` of them, so
    timestep t means the same to both) and prediction type, with trailing spacing: every step count
    starts at the noisiest usable timestep. Bounds on x_0 estimates for pixel-space models (trained with
    clip_sample): DDPM and DDIM clip them to [-1, 1], DPM-Solver++ and UniPC threshold them; Euler has
    no such option in diffusers and runs unbounded."""
    cfg = dict(training.config)
    usable = sampling_timesteps(training)
    truncate = {}  # as keyword arguments: from_config drops trained_betas found in the config itself
    if usable < cfg["num_train_timesteps"]:
        truncate = {"num_train_timesteps": usable, "trained_betas": training.betas[:usable].tolist()}
    if name == "ddpm":
        return DDPMScheduler.from_config(cfg, timestep_spacing="trailing", **truncate)
    if name == "ddim":
        return NextTimestepDDIM.from_config(
            cfg, timestep_spacing="trailing", set_alpha_to_one=True, **truncate
        )
    # Pixel-space models (trained with clip_sample): the data-prediction solvers get the same bound on
    # their x_0 estimates through thresholding, as diffusers recommends (measured: classifier-FID 1.375 ->
    # 1.125 for DPM-Solver++ at 20 steps on the CPU MNIST model).
    bound = (
        {"thresholding": True, "sample_max_value": cfg.get("clip_sample_range", 1.0)}
        if cfg.get("clip_sample")
        else {}
    )
    if name in ("dpmsolver++", "sde-dpmsolver++"):  # 2M; the SDE variant adds fresh noise each step
        return DPMSolverMultistepScheduler.from_config(
            cfg,
            algorithm_type=name,
            solver_order=2,
            timestep_spacing="trailing",
            final_sigmas_type="zero",
            **bound,
            **truncate,
        )
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(
            cfg, timestep_spacing="trailing", final_sigmas_type="zero", **bound, **truncate
        )
    if name == "euler":
        return EulerDiscreteScheduler.from_config(cfg, timestep_spacing="trailing", **truncate)
    raise ValueError(f"unknown sampler {name!r}")


@dataclass
class SampleResult:
    x: torch.Tensor
    nfe: int  # network evaluations per sample, counting both passes of guidance
    seconds: float


@torch.no_grad()
def sample(
    model,
    training: DDPMScheduler,
    sampler: SamplerName,
    steps: int,
    shape: tuple[int, ...],
    y: torch.Tensor | None = None,
    w: float = 1.0,
    null_class: int | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    noise: torch.Tensor | None = None,
) -> SampleResult:
    """Samples of `shape` from pure noise (or from `noise`, the standard normal x_T to start from)."""
    sched = make_sampler(sampler, training, eta)
    sched.set_timesteps(min(steps, sched.config.num_train_timesteps), device=device)  # cosine: 996 usable
    step_kwargs = {}
    params = inspect.signature(sched.step).parameters
    if "generator" in params:
        step_kwargs["generator"] = generator
    if "eta" in params:
        step_kwargs["eta"] = eta
    if "use_clipped_model_output" in params:
        # DDIM: with clip_sample the x_0 estimate is clipped; the noise direction must be re-derived from
        # it, or the two disagree and strong guidance (w = 3) turns digits into scribbles.
        step_kwargs["use_clipped_model_output"] = True
    if device != "cpu" and str(device).startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    if noise is None:
        noise = torch.randn(shape, generator=generator, device=device)
    x = noise.to(device) * sched.init_noise_sigma
    for t in sched.timesteps:
        eps = guided_eps(model, sched.scale_model_input(x, t), t, y, w, null_class)
        x = sched.step(eps, t, x, **step_kwargs).prev_sample
        alive()  # a long evaluation logs nothing: tell the worker's watchdog it is not hung
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    n_steps = len(sched.timesteps)
    return SampleResult(
        x=x,
        nfe=n_steps * passes(w, y is not None and null_class is not None),
        seconds=time.perf_counter() - start,
    )


def sample_batched(
    model,
    training: DDPMScheduler,
    sampler: SamplerName,
    steps: int,
    shape: tuple[int, ...],
    y: torch.Tensor | None,
    w: float,
    null_class: int | None,
    seed: int,
    batch_size: int,
    eta: float = 0.0,
    device: str | torch.device = "cpu",
) -> SampleResult:
    """`sample` over len(y) (or shape[0]) samples in chunks of batch_size. The starting noise of all of
    them is drawn first from one seeded generator, so sample i starts from the same noise for every
    sampler, step count and guidance scale (the stochastic samplers then draw their fresh noise from it)."""
    generator = torch.Generator(device).manual_seed(seed)
    noise = torch.randn(shape, generator=generator, device=device)
    n = shape[0]
    xs, seconds, nfe = [], 0.0, 0
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        r = sample(
            model,
            training,
            sampler,
            steps,
            (m, *shape[1:]),
            y=None if y is None else y[i : i + m],
            w=w,
            null_class=null_class,
            eta=eta,
            generator=generator,
            device=device,
            noise=noise[i : i + m],
        )
        xs.append(r.x)
        seconds += r.seconds
        nfe = r.nfe
    return SampleResult(torch.cat(xs), nfe, seconds)

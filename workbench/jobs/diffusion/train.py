"""The one training loop for every denoiser: epsilon-prediction loss with label dropout for CFG,
AdamW with warm-up and cosine decay, gradient clipping, EMA, checkpoint/resume, cancel, and a
hard stop on a non-finite loss. On a GPU: bf16 autocast, channels_last images, fused AdamW, and
no host sync except every log_every steps.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from torch import nn

from workbench.jobs.context import RunCancelled, RunContext, RunPart
from workbench.jobs.diffusion.guidance import drop_labels
from workbench.jobs.diffusion.schedules import q_sample

BatchFn = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor | None]]


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class TrainConfig:
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    checkpoint_every: int = 500
    log_every: int = 10
    mixed_precision: bool = True  # bf16 autocast, on CUDA only (on CPU bf16 is ~9x slower here)
    sample_every: int = 0  # call on_sample(step, ema_model) every so many steps (0: never)


def autocast(device: torch.device | str, enabled: bool = True):
    """bf16 autocast where it pays (CUDA); a no-op elsewhere."""
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def diffusion_loss(
    model: nn.Module,
    schedule: DDPMScheduler,
    x0: torch.Tensor,
    y: torch.Tensor | None,
    label_dropout: float,
    null_class: int | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """E_{t, eps} || eps - eps_theta(x_t, t, y~) ||^2 with y~ dropped to the null class w.p. p."""
    t = torch.randint(
        0, schedule.config.num_train_timesteps, (x0.shape[0],), device=x0.device, generator=generator
    )
    noise = torch.randn(x0.shape, device=x0.device, generator=generator)
    if y is not None and null_class is not None:
        y = drop_labels(y, label_dropout, null_class, generator)
    return nn.functional.mse_loss(model(q_sample(schedule, x0, t, noise), t, y).float(), noise)


def train(
    ctx: RunContext | RunPart,
    model: nn.Module,
    schedule: DDPMScheduler,
    batches: BatchFn,
    cfg: TrainConfig,
    generator: torch.Generator,
    null_class: int | None,
    on_sample: Callable[[int, nn.Module], None] | None = None,
) -> nn.Module:
    """Train `model` in place and return its EMA copy (what sampling and evaluation use).

    Resumes from the run's last checkpoint: model, EMA, optimiser, LR schedule, RNGs and step, so a
    resumed run ends with the same weights as an uninterrupted one.
    """
    device = next(model.parameters()).device
    on_gpu = device.type == "cuda"
    if on_gpu:
        model.to(memory_format=torch.channels_last)  # a no-op for non-4D weights
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=on_gpu or None
    )
    lr_schedule = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps)
    ema = EMAModel(model.parameters(), decay=cfg.ema_decay, foreach=True)
    start = 0
    if (state := ctx.restore()) is not None:
        start = restore_training_state(state, model, opt, lr_schedule, ema, generator)

    def save(step: int) -> None:
        ctx.checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "lr_schedule": lr_schedule.state_dict(),
                "ema": ema.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "step": step,
            }
            | ({"cuda_rng": torch.cuda.get_rng_state(device)} if on_gpu else {}),
            step,
        )

    def ema_copy() -> nn.Module:
        copied = copy.deepcopy(model)
        ema.copy_to(copied.parameters())
        return copied.eval()

    model.train()
    pending: list[torch.Tensor] = []  # losses not yet read back (reading syncs the GPU)
    for step in range(start + 1, cfg.steps + 1):
        x0, y = batches(generator)
        if on_gpu and x0.dim() == 4:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.mixed_precision):
            loss = diffusion_loss(model, schedule, x0, y, cfg.label_dropout, null_class, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        lr_schedule.step()
        ema.step(model.parameters())
        pending.append(loss.detach())
        stop = ctx.should_stop()  # asked every step (an event; cheap): a stop is honoured within one step
        last = step == cfg.steps
        if stop or step % cfg.log_every == 0 or step % cfg.checkpoint_every == 0 or last:
            values = torch.stack(pending).float().cpu().tolist()
            first = step - len(values) + 1
            for i, v in enumerate(values):
                if not math.isfinite(v):
                    raise NonFiniteLoss(
                        f"loss is {v} at step {first + i}; stopped instead of training on "
                        "(lower the learning rate or check the data)"
                    )
            pending.clear()
            ctx.log(step, loss=sum(values) / len(values), lr=lr_schedule.get_last_lr()[0])
            ctx.progress(step, cfg.steps)
        if stop or step % cfg.checkpoint_every == 0 or last:
            save(
                step
            )  # after the losses up to this step were checked: never a checkpoint of a diverged model
        if stop:
            raise RunCancelled
        if on_sample and cfg.sample_every and (step % cfg.sample_every == 0 or last):
            on_sample(step, ema_copy())  # draws from its own generator: training randomness is untouched
    return ema_copy()


def restore_training_state(
    state: dict,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    lr_schedule,
    ema: EMAModel,
    generator: torch.Generator,
) -> int:
    """Put a checkpoint (tensors on the CPU, as RunContext.restore gives them) back with every tensor on
    the model's device; returns its step. Each part goes through its own API, which knows its placement."""
    device = next(model.parameters()).device
    model.load_state_dict(state["model"])  # copies into the parameters, on their device
    restore_optimizer(opt, state["optimizer"])
    lr_schedule.load_state_dict(state["lr_schedule"])
    ema.load_state_dict(state["ema"])
    # EMAModel keeps the tensors it was given, on the CPU: its next step would mix devices
    ema.shadow_params = [like(p, s) for p, s in zip(model.parameters(), ema.shadow_params, strict=True)]
    generator.set_state(state["generator"])  # a CUDA generator also takes its state as a CPU byte tensor
    if "torch_rng" in state:  # dropout draws from the global generator
        torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return int(state["step"])


def restore_optimizer(opt: torch.optim.Optimizer, saved: dict) -> None:
    """Load an optimizer's checkpointed state with each moment on, and laid out like, its parameter."""
    opt.load_state_dict(saved)  # casts the moments to their parameters' device (step: torch's choice)
    for param, moments in opt.state.items():
        for key, value in moments.items():
            if torch.is_tensor(value) and value.shape == param.shape:
                moments[key] = like(param, value)


def like(param: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
    """`saved` on `param`'s device and with its strides. Checkpoints store tensors contiguous and
    `load_state_dict` keeps that, but fused AdamW on CUDA wants each moment laid out like its
    parameter: a channels_last model's first step after a resume failed on an H100 without this."""
    return torch.empty_like(param, dtype=saved.dtype).copy_(saved)

"""Training throughput: the workbench loop against a plain diffusers train_unconditional-style loop.

Both train the same UNet2DModel (class-conditional, as the images kind builds it) on the same batch
size, side by side in one process, and report images per second and the ratio:
- plain: fp32, eager, a torch DataLoader over the dataset (shuffle, default collate), the noise and
  timesteps drawn per batch, AdamW + cosine warm-up, clip_grad_norm_, diffusers EMAModel (per-tensor
  updates), and loss.item() every step, as diffusers' examples/unconditional_image_generation does;
- workbench: jobs.diffusion.train.train with a real RunContext (store, logging, checkpoints off the
  timed window): batches indexed from a tensor already on the device, foreach EMA, losses read back
  every log_every steps; on CUDA also bf16 autocast, channels_last and fused AdamW.

    python bench/train_throughput.py [--device cpu|cuda] [--steps 6] [--config digits|mnist|both]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

CONFIGS = {  # name: (image shape, channels, attention, batch)
    "digits": ((1, 8, 8), (32, 64), (False, True), 128),
    "mnist": ((1, 28, 28), (32, 64, 64), (False, True, False), 128),
    "mnist-paper": ((1, 28, 28), (64, 128, 256), (False, True, True), 256),
}


def make_unet(shape, channels, attention, device):
    from workbench.jobs.diffusion.denoisers import UNetDenoiser

    torch.manual_seed(0)
    return UNetDenoiser(
        shape, channels, attention, layers_per_block=2 if len(channels) > 2 else 1, num_classes=10
    ).to(device)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_loop(x, y, shape, channels, attention, batch, steps, device) -> float:
    """Seconds per step of a train_unconditional-style loop, after one warm-up step."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel
    from torch.utils.data import DataLoader, TensorDataset

    model = make_unet(shape, channels, attention, device).unet
    sched = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lr = get_cosine_schedule_with_warmup(opt, 10, 10_000)
    ema = EMAModel(model.parameters(), decay=0.999)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, drop_last=True)
    it = iter(loader)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        try:
            clean, labels = next(it)
        except StopIteration:
            it = iter(loader)
            clean, labels = next(it)
        clean, labels = clean.to(device), labels.to(device)
        noise = torch.randn_like(clean)
        t = torch.randint(0, 1000, (clean.shape[0],), device=device)
        pred = model(sched.add_noise(clean, noise, t), t, class_labels=labels).sample
        loss = nn.functional.mse_loss(pred, noise)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lr.step()
        opt.zero_grad()
        ema.step(model.parameters())
        loss.detach().item()
        sync(device)
        if step:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def workbench_loop(x, y, shape, channels, attention, batch, steps, device) -> float:
    from workbench.jobs.context import RunContext
    from workbench.jobs.diffusion.schedules import make_schedule
    from workbench.jobs.diffusion.train import TrainConfig, train
    from workbench.store import queue
    from workbench.store.db import Store

    store = Store(home=Path(tempfile.mkdtemp(prefix="wb-bench-")))
    _, (rid,) = queue.submit(
        store,
        name="bench",
        kind="sleep",
        spec_text="",
        sweep={},
        runs=[queue.NewRun("bench", {"kind": "sleep"})],
    )
    queue.claim(store, "bench", device)
    ctx = RunContext(store, rid, device=device)
    model = make_unet(shape, channels, attention, device)
    xd, yd = x.to(device), y.to(device)
    marks: list[float] = []

    def batches(g):
        marks.append(time.perf_counter())
        idx = torch.randint(0, len(xd), (batch,), device=device, generator=g)
        return xd[idx], yd[idx]

    cfg = TrainConfig(
        steps=steps + 2,
        batch_size=batch,
        lr=1e-4,
        warmup_steps=10,
        ema_decay=0.999,
        label_dropout=0.1,
        checkpoint_every=10_000_000,
        log_every=10,
    )
    # checkpoint_every is out of reach, but train() saves at the last step: that one is not timed.
    train(
        ctx,
        model,
        make_schedule("linear", 1000, clip_sample=True),
        batches,
        cfg,
        torch.Generator(device).manual_seed(0),
        model.null_class,
    )
    sync(device)
    # marks[i] is the start of step i+1: time steps 2 .. steps+1 (the first is warm-up, the last saves)
    return (marks[steps + 1] - marks[1]) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--config", default="both", choices=[*CONFIGS, "both", "all"])
    args = parser.parse_args()
    names = {"both": ["digits", "mnist"], "all": list(CONFIGS)}.get(args.config, [args.config])
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for name in names:
        shape, channels, attention, batch = CONFIGS[name]
        g = torch.Generator().manual_seed(0)
        x = torch.rand((4 * batch, *shape), generator=g) * 2 - 1
        y = torch.randint(0, 10, (4 * batch,), generator=g)
        plain = plain_loop(x, y, shape, channels, attention, batch, args.steps, args.device)
        ours = workbench_loop(x, y, shape, channels, attention, batch, args.steps, args.device)
        print(
            f"{name:12s} {shape} channels {channels} batch {batch}: plain {batch / plain:8.1f} img/s "
            f"({plain * 1000:7.1f} ms/step)  workbench {batch / ours:8.1f} img/s ({ours * 1000:7.1f} ms/step)  "
            f"ratio {plain / ours:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()

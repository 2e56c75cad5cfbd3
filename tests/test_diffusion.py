"""Noise schedules, forward process, guidance, samplers, and the shared training loop."""

from __future__ import annotations

import typing

import pytest
import torch

from workbench.jobs.context import RunCancelled, RunContext
from workbench.jobs.diffusion.config import SamplerName
from workbench.jobs.diffusion.denoisers import MLPDenoiser
from workbench.jobs.diffusion.guidance import drop_labels, guided_eps
from workbench.jobs.diffusion.samplers import sample
from workbench.jobs.diffusion.schedules import make_schedule, q_sample
from workbench.jobs.diffusion.train import NonFiniteLoss, TrainConfig, restore_training_state, train
from workbench.store import queue
from workbench.store.queries import artifacts


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedules_decay_to_noise(name):
    s = make_schedule(name, 1000)
    abar = s.alphas_cumprod
    assert abar.shape == (1000,) and torch.all(abar[1:] < abar[:-1])
    assert abar[0] > 0.99 and abar[-1] < 1e-3


def test_forward_process_matches_its_marginal():
    s = make_schedule("linear", 1000)
    x0 = torch.full((200_000, 2), 2.0)
    g = torch.Generator().manual_seed(0)
    for t in (10, 500, 999):
        xt = q_sample(s, x0, torch.full((len(x0),), t), torch.randn(x0.shape, generator=g))
        abar = s.alphas_cumprod[t]
        assert xt.mean().item() == pytest.approx(2.0 * abar.sqrt().item(), abs=0.01)
        assert xt.var().item() == pytest.approx((1 - abar).item(), abs=0.01)


def test_label_dropout_rate():
    y = torch.zeros(100_000, dtype=torch.long)
    dropped = drop_labels(y, 0.1, 8, torch.Generator().manual_seed(0))
    assert (dropped == 8).float().mean().item() == pytest.approx(0.1, abs=0.005)


def test_guidance_formula_and_special_cases():
    torch.manual_seed(0)
    m = MLPDenoiser(2, 16, 1, num_classes=3).eval()
    x, t, y = torch.randn(5, 2), torch.tensor(100), torch.tensor([0, 1, 2, 0, 1])
    null = torch.full_like(y, 3)
    with torch.no_grad():
        cond, uncond = m(x, t, y), m(x, t, null)
        assert torch.allclose(guided_eps(m, x, t, y, 0.0, 3), uncond)
        assert torch.allclose(guided_eps(m, x, t, y, 1.0, 3), cond)
        assert torch.allclose(guided_eps(m, x, t, y, 3.0, 3), uncond + 3.0 * (cond - uncond), atol=1e-6)


def test_w0_sampling_equals_unconditional_sampling():
    torch.manual_seed(0)
    m = MLPDenoiser(2, 16, 1, num_classes=3).eval()
    s = make_schedule("linear", 100)
    y = torch.tensor([0, 1, 2, 0])
    guided = sample(
        m, s, "ddim", 10, (4, 2), y=y, w=0.0, null_class=3, generator=torch.Generator().manual_seed(1)
    )
    uncond = sample(
        m,
        s,
        "ddim",
        10,
        (4, 2),
        y=torch.full_like(y, 3),
        w=1.0,
        null_class=3,
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.equal(guided.x, uncond.x)


@pytest.mark.parametrize("sampler", typing.get_args(SamplerName))
def test_every_sampler_gives_finite_samples_and_counts_nfe(sampler):
    torch.manual_seed(0)
    m = MLPDenoiser(2, 16, 1, num_classes=2).eval()
    s = make_schedule("cosine", 200)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    rows = []  # every network call, by the number of samples it evaluated
    m.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    r = sample(
        m, s, sampler, 10, (6, 2), y=y, w=3.0, null_class=2, generator=torch.Generator().manual_seed(0)
    )
    assert r.x.shape == (6, 2) and torch.isfinite(r.x).all()
    assert r.nfe == sum(rows) / 6 == 20  # counted on the model: both passes of guidance, every step
    rows.clear()
    assert sample(m, s, sampler, 10, (6, 2), y=y, w=1.0, null_class=2).nfe == sum(rows) / 6 == 10


def _context(store) -> RunContext:
    (rid,) = queue.submit(
        store, name="t", kind="sleep", spec_text="", sweep={}, runs=[queue.NewRun("r", {"kind": "sleep"})]
    )[1]
    queue.claim(store, "w", "cpu")
    return RunContext(store, rid)


def _toy_batches(g: torch.Generator):
    x = torch.randn(64, 2, generator=g) * 0.5 + 1.0
    return x, (x[:, 0] > 1.0).long()


def _fresh(seed: int = 0):
    torch.manual_seed(seed)
    return (
        MLPDenoiser(2, 16, 2, num_classes=2),
        make_schedule("linear", 100),
        torch.Generator().manual_seed(seed),
    )


def test_resumed_training_equals_uninterrupted_training(store):
    cfg = TrainConfig(steps=40, batch_size=64, lr=1e-2, warmup_steps=5, checkpoint_every=10, log_every=10)
    model, sched, g = _fresh()
    straight = train(_context(store), model, sched, _toy_batches, cfg, g, null_class=2)

    ctx = _context(store)
    model, sched, g = _fresh()
    calls = 0

    def batches_then_stop(gen):
        nonlocal calls
        calls += 1
        if calls == 17:
            ctx.request_stop()  # as a cancel would, between two log steps
        return _toy_batches(gen)

    with pytest.raises(RunCancelled):
        train(ctx, model, sched, batches_then_stop, cfg, g, null_class=2)
    # The stop is honoured within one step, with a checkpoint of that step (not at the next log step).
    assert [a.step for a in artifacts(store, ctx.run_id, "checkpoint")] == [17]
    model, sched, g = _fresh(seed=123)  # a new process: fresh weights and RNG, all restored from disk
    ctx._stop.clear()
    resumed = train(ctx, model, sched, _toy_batches, cfg, g, null_class=2)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_non_finite_loss_stops_training(store):
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(float("nan")))

        def forward(self, x, t, y):
            return x * self.w

    cfg = TrainConfig(steps=50, batch_size=8, lr=1e-3, log_every=10, checkpoint_every=100)
    with pytest.raises(NonFiniteLoss, match="loss is nan at step 1"):
        train(
            _context(store),
            Broken(),
            make_schedule("linear", 100),
            _toy_batches,
            cfg,
            torch.Generator().manual_seed(0),
            null_class=None,
        )


def test_stochastic_samplers_follow_their_seed():
    torch.manual_seed(0)
    m = MLPDenoiser(2, 16, 1).eval()
    s = make_schedule("linear", 100)
    for name in ("ddpm", "sde-dpmsolver++"):
        a, b, c = (
            sample(m, s, name, 8, (5, 2), generator=torch.Generator().manual_seed(seed)).x
            for seed in (1, 1, 2)
        )
        assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_a_checkpoint_is_restored_onto_the_model_device(store):
    """Every restored tensor lands on the run's device: the meta device stands in for a GPU here.

    Before the fix the EMA's shadow weights stayed on the CPU, so its first step after a resume on a GPU
    mixed devices and crashed: the ema.step below does the same on meta.
    """
    from diffusers.training_utils import EMAModel

    ctx = _context(store)
    model, sched, g = _fresh()
    train(
        ctx, model, sched, _toy_batches, TrainConfig(steps=3, batch_size=8, lr=1e-2, checkpoint_every=3), g, 2
    )
    state = ctx.restore()

    model = MLPDenoiser(2, 16, 2, num_classes=2).to("meta")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    ema = EMAModel(MLPDenoiser(2, 16, 2, num_classes=2).parameters(), foreach=True)  # built on the CPU
    assert restore_training_state(state, model, opt, lr_schedule, ema, torch.Generator()) == 3
    moments = [
        v for st in opt.state.values() for k, v in st.items() if k != "step"
    ]  # torch keeps `step` on CPU
    misplaced = [
        t.device for t in [*model.parameters(), *moments, *ema.shadow_params] if t.device.type != "meta"
    ]
    assert moments and not misplaced
    ema.step(model.parameters())


def test_a_channels_last_model_gets_its_moments_back_in_its_own_layout(store):
    """Checkpoints store tensors contiguous; a channels_last model (as training uses on a GPU) must get
    its AdamW moments and EMA weights back with its own strides. Fused AdamW on CUDA refuses anything
    else: `retry` of a GPU run failed on an H100 ("params, grads, exp_avgs, and exp_avg_sqs must have
    same dtype, device, and layout"). The CPU's fused kernel does not check, so this checks the strides."""
    from diffusers.training_utils import EMAModel

    ctx = _context(store)

    def parts():
        model = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
        return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0), EMAModel(model.parameters())

    model, opt, lr_schedule, ema = parts()
    model(torch.randn(2, 3, 8, 8)).square().mean().backward()
    opt.step()
    ema.step(model.parameters())
    ctx.checkpoint(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "ema": ema.state_dict(),
            "lr_schedule": lr_schedule.state_dict(),
            "generator": torch.Generator().get_state(),
            "step": 1,
        },
        1,
    )

    model, opt, lr_schedule, ema = parts()
    assert restore_training_state(ctx.restore(), model, opt, lr_schedule, ema, torch.Generator()) == 1
    w = model.weight
    assert w.stride() != w.contiguous().stride()  # the layout under test
    assert opt.state[w]["exp_avg"].stride() == opt.state[w]["exp_avg_sq"].stride() == w.stride()
    assert ema.shadow_params[0].stride() == w.stride()

"""Every sampler against an exact answer: for Gaussian data the optimal noise predictor is known in closed
form, so the samplers can be checked without training anything.

For x_0 ~ N(mu, S), x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps is N(sqrt(abar_t) mu, S_t) with
S_t = abar_t S + (1 - abar_t) I, and the optimal predictor is E[eps | x_t] = sqrt(1 - abar_t) S_t^-1
(x_t - sqrt(abar_t) mu). Started from the exact marginal of x_T (not N(0, I): the linear schedule's
abar_T is 4e-5, not 0, a property of the schedule that is not the sampler's to fix), a sampler that
asks for the right timestep and steps correctly must:
- keep the mean exactly (E[eps | x_t] vanishes at the marginal's mean; deterministic samplers map the
  whitened start's mean through exactly; stochastic ones add zero-mean noise), at every step count;
- reach the covariance within a discretisation error that shrinks as steps grow.
Guidance: with a class model N(mu_y, S) and a null model N(mu_0, S) sharing S, eps_0 + w (eps_y - eps_0)
is exactly the predictor of N(mu_0 + w (mu_y - mu_0), S), so guided sampling has an exact target too.
A mixture of well-separated Gaussians (its predictor the posterior-weighted mix) checks the weights.
"""

from __future__ import annotations

import math

import pytest
import torch

from workbench.jobs.diffusion.samplers import NextTimestepDDIM, make_sampler, sample
from workbench.jobs.diffusion.schedules import make_schedule

DETERMINISTIC = ("ddim", "dpmsolver++", "unipc", "euler")
STOCHASTIC = ("ddpm", "sde-dpmsolver++")
STEPS = (5, 10, 20, 30, 50)  # the sampling kind's presets use 5-50; 30 does not divide T
T = 1000


class GaussianModel(torch.nn.Module):
    """The exact eps predictor of N(means[y], cov) per class y; the null class (the last row) is
    the unconditional model. `shift` moves the timestep it is told by that much: a planted bug."""

    def __init__(self, schedule, means: torch.Tensor, cov: torch.Tensor, shift: int = 0):
        super().__init__()
        self.abar = schedule.alphas_cumprod.double()
        self.means, self.cov, self.shift = means.double(), cov.double(), shift
        self.evaluations = 0  # per-sample network evaluations, counted

    def forward(self, x, t, y=None):
        self.evaluations += len(x)
        a = self.abar[min(max(int(t.reshape(-1)[0]) + self.shift, 0), T - 1)]
        mu = self.means[-1].expand(len(x), -1) if y is None else self.means[y]
        s_t = a * self.cov + (1 - a) * torch.eye(len(self.cov), dtype=torch.float64)
        return ((1 - a).sqrt() * torch.linalg.solve(s_t, (x.double() - a.sqrt() * mu).T).T).float()


class MixtureModel(torch.nn.Module):
    """The exact eps predictor of an equal-weight mixture of N(means[k], var I)."""

    def __init__(self, schedule, means: torch.Tensor, var: float):
        super().__init__()
        self.abar = schedule.alphas_cumprod.double()
        self.means, self.var = means.double(), var

    def forward(self, x, t, y=None):
        a = self.abar[int(t.reshape(-1)[0])]
        v = a * self.var + 1 - a
        d = x.double()[:, None, :] - a.sqrt() * self.means[None]  # (n, K, dim)
        post = torch.softmax(-(d**2).sum(-1) / (2 * v), dim=1)  # p(component k | x_t)
        return ((1 - a).sqrt() / v * (post[..., None] * d).sum(1)).float()


def whiten(z: torch.Tensor) -> torch.Tensor:
    """Rows of z made to have sample mean exactly 0 and sample covariance exactly I."""
    z = z.double() - z.double().mean(0)
    chol = torch.linalg.cholesky(torch.cov(z.T))
    return torch.linalg.solve_triangular(chol, z.T, upper=False).T


def whitened(n: int, dim: int, seed: int) -> torch.Tensor:
    return whiten(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))


@pytest.fixture(autouse=True)
def whitened_step_noise(monkeypatch):
    """The stochastic samplers' fresh noise, whitened per step: their means are then exact too, and
    their covariances carry far less sampling noise, so tolerances can be tight."""
    from diffusers.schedulers import scheduling_ddpm, scheduling_dpmsolver_multistep
    from diffusers.utils.torch_utils import randn_tensor

    def whitened_randn(shape, generator=None, device=None, dtype=None, layout=None):
        z = randn_tensor(shape, generator=generator, device=device, dtype=torch.float64)
        return whiten(z.reshape(shape[0], -1)).reshape(shape).to(dtype or torch.float32)

    for module in (scheduling_ddpm, scheduling_dpmsolver_multistep):
        monkeypatch.setattr(module, "randn_tensor", whitened_randn)


def first_timestep(schedule) -> int:
    """Where every sampler must start: the noisiest training timestep with log-SNR >= -10.2 (999 for the
    linear schedule; 995 for the cosine one, whose last steps reach abar = 2.4e-9)."""
    abar = schedule.alphas_cumprod.double()
    return int(torch.nonzero(abar / (1 - abar) >= math.exp(-10.2)).max())


def exact_start(schedule, mean: torch.Tensor, cov: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """x at the first timestep drawn from its exact marginal, in the units `sample` expects (it multiplies by
    init_noise_sigma: 1 for the VP samplers; for Euler sqrt(sigma^2 + 1) = 1 / sqrt(abar), which turns x
    into its sigma-space state x / sqrt(abar))."""
    a = schedule.alphas_cumprod.double()[first_timestep(schedule)]
    s_t = a * cov.double() + (1 - a) * torch.eye(len(cov), dtype=torch.float64)
    return (a.sqrt() * mean.double() + z @ torch.linalg.cholesky(s_t).T).float()


MEANS = torch.tensor([[2.0, -1.0], [-1.0, 0.5]])  # class 0, then the null (unconditional) model
COV = torch.tensor([[0.25, 0.06], [0.06, 0.09]])


class Predicting(torch.nn.Module):
    """A model's exact eps turned into what a model trained for another prediction type outputs:
    v = sqrt(abar) eps - sqrt(1 - abar) x_0 = (eps - sqrt(1 - abar) x_t) / sqrt(abar), or x_0 itself."""

    def __init__(self, eps_model: GaussianModel, prediction: str):
        super().__init__()
        self.eps_model, self.prediction = eps_model, prediction

    @property
    def evaluations(self):
        return self.eps_model.evaluations

    def forward(self, x, t, y=None):
        eps = self.eps_model(x, t, y).double()
        a = self.eps_model.abar[int(t.reshape(-1)[0])]
        if self.prediction == "v_prediction":
            return ((eps - (1 - a).sqrt() * x.double()) / a.sqrt()).float()
        return ((x.double() - (1 - a).sqrt() * eps) / a.sqrt()).float()


def published_schedule(schedule_name: str, prediction: str):
    """The schedule a published model's scheduler config gives, read the way `pretrained:` reads it."""
    from diffusers import DDPMScheduler

    from workbench.jobs.diffusion.pretrained import schedule_settings

    config = {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": T,
        "beta_schedule": {"linear": "linear", "cosine": "squaredcos_cap_v2"}[schedule_name],
        "prediction_type": prediction,
        "timestep_spacing": "leading",  # what a config carries; the samplers use their own spacing
    }
    return DDPMScheduler(**schedule_settings(config, "test"))


def run_gaussian(
    name: str,
    steps: int,
    schedule_name: str,
    w: float = 1.0,
    shift: int = 0,
    n: int | None = None,
    prediction: str = "epsilon",
    read_as: str | None = None,
):
    """(mean error, covariance error) of samples against the exact N(mu_0 + w (mu_1 - mu_0), S): the mean
    error in units of the data's standard deviation, the covariance's as a relative (Frobenius) error.
    prediction: what the model outputs (epsilon, v_prediction, sample); read_as: what its schedule says
    it outputs (default: the same; another is the planted bug of a misread config)."""
    schedule = (
        make_schedule(schedule_name, T)
        if (read_as or prediction) == "epsilon"
        else published_schedule(schedule_name, read_as or prediction)
    )
    model = GaussianModel(schedule, MEANS, COV, shift)
    if prediction != "epsilon":
        model = Predicting(model, prediction)
    target = MEANS[1] + w * (MEANS[0] - MEANS[1])
    n = n or (8192 if name in DETERMINISTIC else 32768)
    x_t = exact_start(schedule, target, COV, whitened(n, 2, seed=steps))
    y = torch.zeros(n, dtype=torch.long)
    r = sample(
        model,
        schedule,
        name,
        steps,
        (n, 2),
        y=y,
        w=w,
        null_class=1,
        noise=x_t,
        generator=torch.Generator().manual_seed(1),
    )
    x = r.x.double()
    mean_err = ((x.mean(0) - target.double()) / COV.diagonal().double().sqrt()).abs().max().item()
    cov_err = (torch.linalg.norm(torch.cov(x.T) - COV.double()) / torch.linalg.norm(COV.double())).item()
    return mean_err, cov_err, model.evaluations / n, r.nfe


MEAN_TOLERANCE = 2e-4  # float32 round-off: the starting noise and every step's fresh noise are whitened


def cov_tolerance(name: str, steps: int) -> float:
    """Discretisation error allowed at `steps` (relative, Frobenius), shrinking as steps grow: like 1/steps
    for the first-order solvers (DDIM, Euler) and the SDE solver, like 1/steps^2 once the second-order
    multistep solvers (DPM-Solver++ 2M, UniPC) are past a few steps, and like 1/sqrt(steps) for ancestral
    DDPM. The constants sit 1.2-2x above the errors measured at 5-50 steps on this data, whose variances
    (0.07-0.27) are small next to the noise's, the case where few steps hurt most."""
    if name in ("dpmsolver++", "unipc"):
        return min(6 / steps, 50 / steps**2)
    if name == "ddpm":
        return 3 / steps**0.5
    return 6 / steps


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("name", [*DETERMINISTIC, *STOCHASTIC])
def test_samplers_reach_the_exact_gaussian(name, schedule_name):
    errors = {}
    for steps in STEPS:
        mean_err, cov_err, evaluations, nfe = run_gaussian(name, steps, schedule_name)
        errors[steps] = (mean_err, cov_err)
        assert mean_err <= MEAN_TOLERANCE, (steps, errors)
        assert cov_err <= cov_tolerance(name, steps), (steps, errors)
        assert evaluations == nfe == steps  # one network evaluation per step at w = 1, counted on the model


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("name", [*DETERMINISTIC, *STOCHASTIC])
def test_guided_samplers_reach_the_exact_guided_gaussian(name, schedule_name):
    for w in (0.0, 3.0):
        mean_err, cov_err, evaluations, nfe = run_gaussian(name, 20, schedule_name, w=w)
        assert mean_err <= MEAN_TOLERANCE, (w, mean_err)
        assert cov_err <= cov_tolerance(name, 20), (w, cov_err)
        assert evaluations == nfe == (40 if w == 3.0 else 20)  # both passes of guidance, counted


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_samplers_reach_the_exact_gaussian_from_v_and_x0_predicting_models(prediction, schedule_name):
    """A published model may predict v or x_0 (its scheduler config says which): every sampler, built from
    that config as `pretrained:` builds it, reaches the same exact answer, guided and unguided."""
    for name in (*DETERMINISTIC, *STOCHASTIC):
        for steps, w in ((10, 1.0), (20, 3.0)):
            mean_err, cov_err, _, _ = run_gaussian(name, steps, schedule_name, w=w, prediction=prediction)
            assert mean_err <= MEAN_TOLERANCE, (name, steps, w, mean_err)
            assert cov_err <= cov_tolerance(name, steps), (name, steps, w, cov_err)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_a_v_model_read_as_an_eps_model_is_caught(schedule_name):
    """The planted bug: the schedule ignores the config's prediction type (v read as eps, and eps as v)."""
    for name in (*DETERMINISTIC, *STOCHASTIC):
        for prediction, read_as in (("v_prediction", "epsilon"), ("epsilon", "v_prediction")):
            mean_err, cov_err, _, _ = run_gaussian(
                name, 20, schedule_name, prediction=prediction, read_as=read_as
            )
            assert mean_err > MEAN_TOLERANCE or cov_err > cov_tolerance(name, 20), (name, prediction)


def test_the_full_ddpm_chain_reaches_the_exact_gaussian():
    for schedule_name in ("linear", "cosine"):
        mean_err, cov_err, _, _ = run_gaussian("ddpm", T, schedule_name)
        # the first of 1000 steps divides by sqrt(abar_999) (3e-5 for cosine): float32 round-off, amplified
        assert mean_err <= 2e-3 and cov_err <= 0.02, (schedule_name, mean_err, cov_err)


@pytest.mark.parametrize("shift", [1, -1])
@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_a_timestep_shifted_by_one_is_caught(shift, schedule_name):
    """The planted bug: the model is told t + shift. Every sampler must fail the exact-answer checks."""
    for name in (*DETERMINISTIC, *STOCHASTIC):
        caught = []
        for steps in STEPS:
            mean_err, cov_err, _, _ = run_gaussian(name, steps, schedule_name, shift=shift)
            caught.append(mean_err > MEAN_TOLERANCE or cov_err > cov_tolerance(name, steps))
        assert any(caught), (name, schedule_name, shift)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("name", [*DETERMINISTIC, *STOCHASTIC])
def test_samplers_put_the_right_mass_on_each_mixture_component(name, schedule_name):
    """8 unit-spaced Gaussians on a circle of radius 2, sd 0.25: every component gets 1/8 of the samples
    and its own mean (within sampling noise), which wrong posterior weights or step algebra would break."""
    k, n, sd = 8, 40_000, 0.25
    angles = 2 * torch.pi * torch.arange(k) / k
    means = 2 * torch.stack([angles.cos(), angles.sin()], 1)
    schedule = make_schedule(schedule_name, T)
    a = schedule.alphas_cumprod.double()[first_timestep(schedule)]
    g = torch.Generator().manual_seed(0)
    comp = torch.arange(n) % k
    x_t = a.sqrt() * means.double()[comp] + (a * sd**2 + 1 - a).sqrt() * torch.randn(
        n, 2, generator=g, dtype=torch.float64
    )
    r = sample(
        MixtureModel(schedule, means, sd**2), schedule, name, 50, (n, 2), noise=x_t.float(), generator=g
    )
    x = r.x.double()
    nearest = torch.cdist(x, means.double()).argmin(1)
    shares = torch.bincount(nearest, minlength=k) / n
    se = (1 / k * (1 - 1 / k) / n) ** 0.5
    assert (shares - 1 / k).abs().max() <= 5 * se, shares
    for c in range(k):
        pts = x[nearest == c]
        assert (pts.mean(0) - means[c].double()).norm() <= 0.03, (c, pts.mean(0))
        assert abs(pts.std(0).mean().item() - sd) <= 0.03, (c, pts.std(0))


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_samplers_start_at_the_noisiest_usable_timestep(schedule_name):
    """Every sampler, at every step count, starts where the data is pure noise and takes that many steps
    (the ddpm sampler used to start at t = 800 for 5 steps: leading spacing)."""
    schedule = make_schedule(schedule_name, T)
    start = first_timestep(schedule)
    assert start == (T - 1 if schedule_name == "linear" else T - 5)
    for name in (*DETERMINISTIC, *STOCHASTIC):
        for steps in (*STEPS, 200):
            s = make_sampler(name, schedule)
            s.set_timesteps(steps)
            ts = [round(float(t)) for t in s.timesteps]
            assert ts[0] == start and len(ts) == steps, (name, steps, ts[:3])


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_next_timestep_ddim_is_diffusers_ddim_where_that_one_is_right(eta):
    """At step counts that divide T the two DDIMs take the same steps: the same samples from the same noise,
    with everything `sample` hands DDIM (x_0 clipping for pixel models, the clipped-output re-derivation
    that strong guidance needs, eta's fresh noise). A step that dropped those arguments fails here."""
    from diffusers import DDIMScheduler

    import workbench.jobs.diffusion.samplers as samplers

    schedule = make_schedule("linear", T, clip_sample=True)
    model = GaussianModel(schedule, torch.tensor([[0.9, -0.8], [0.0, 0.0]]), torch.eye(2) * 0.3)
    noise = torch.randn(512, 2, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(512, dtype=torch.long)
    ours = sample(
        model,
        schedule,
        "ddim",
        20,
        (512, 2),
        y=y,
        w=3.0,
        null_class=1,
        eta=eta,
        noise=noise,
        generator=torch.Generator().manual_seed(1),
    ).x
    try:
        samplers.NextTimestepDDIM = DDIMScheduler
        theirs = sample(
            model,
            schedule,
            "ddim",
            20,
            (512, 2),
            y=y,
            w=3.0,
            null_class=1,
            eta=eta,
            noise=noise,
            generator=torch.Generator().manual_seed(1),
        ).x
    finally:
        samplers.NextTimestepDDIM = NextTimestepDDIM
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()

"""Image diffusion (the images kind), the samplers on images, the reference classifier, the sampling kind."""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import write_spec
from tests.test_ddpm_kind import run_spec
from workbench.jobs.classify import ReferenceCNN
from workbench.jobs.context import RunCancelled, RunContext
from workbench.jobs.data.images import DataError, ImageData, load_images
from workbench.jobs.diffusion import image_model
from workbench.jobs.diffusion.config import SamplerName
from workbench.jobs.diffusion.denoisers import UNetDenoiser
from workbench.jobs.diffusion.samplers import sample
from workbench.jobs.diffusion.schedules import make_schedule
from workbench.jobs.jobfile import resolve
from workbench.jobs.kinds import images, sampling
from workbench.jobs.metrics import reference
from workbench.store import queries, queue
from workbench.store.db import Store
from workbench.store.queries import artifacts, show

TINY = {
    "kind": "images",
    "timesteps": 50,
    "data": {"name": "digits", "n_train": 300},
    "model": {"channels": [16, 32], "attention": [False, True]},
    "train": {"steps": 12, "batch_size": 32, "checkpoint_every": 6, "warmup_steps": 2, "ema_decay": 0.9},
    "sample": {
        "sampler": {"name": "ddim", "steps": 5},
        "n_samples": 20,
        "guidance_scales": [0.0, 3.0],
        "every": 6,
        "grid_columns": 2,
    },
}


def tiny_spec(**over) -> images.Spec:
    from workbench.jobs.spec import deep_merge

    return resolve(images.Spec, deep_merge(TINY, over))


def new_run(store, spec) -> int:
    _, (rid,) = queue.submit(
        store,
        name="t",
        kind=spec.kind,
        spec_text="",
        sweep={},
        runs=[queue.NewRun("t", spec.model_dump(mode="json"))],
    )
    queue.claim(store, "w", "cpu")
    return rid


def ema_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_resumes_to_the_same_weights(store):
    spec = tiny_spec()
    data = image_model.load_data(spec)
    whole, _ = image_model.train_model(RunContext(store, new_run(store, spec)), spec, data)

    rid = new_run(store, spec)
    ctx = RunContext(store, rid)
    ctx.should_stop = lambda: True  # honoured at the end of step 1
    with pytest.raises(RunCancelled):
        image_model.train_model(ctx, spec, data)
    queue.finish(store, rid, "w", "cancelled")
    queue.retry(store, rid)
    assert queue.claim(store, "w", "cpu").attempt == 2
    resumed, _ = image_model.train_model(RunContext(store, rid, attempt=2), spec, data)
    a, b = ema_weights(whole), ema_weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed training differs from uninterrupted training"
    # The grids: one per guidance scale at each sample.every step, and the forward process.
    names = {(x.name, x.step) for x in artifacts(store, rid, "image")}
    assert {
        ("samples/w0", 6),
        ("samples/w3", 6),
        ("samples/w0", 12),
        ("samples/w3", 12),
        ("forward_process", None),
    } <= names
    grid = np.asarray(
        Image.open(
            store.home
            / next(x.path for x in artifacts(store, rid, "image") if x.name == "samples/w3" and x.step == 12)
        )
    )
    assert grid.shape[0] > 32 and grid.std() > 0  # ten class rows of upscaled 8x8 samples, not blank


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNetDenoiser((1, 8, 8), (16, 32), (False, True), num_classes=10).eval()


@pytest.mark.parametrize("name", typing.get_args(SamplerName))
def test_each_sampler_gives_finite_images_of_the_right_shape(unet, name):
    schedule = make_schedule("linear", 50, clip_sample=True)
    y = torch.arange(6) % 10
    r = sample(
        unet,
        schedule,
        name,
        4,
        (6, 1, 8, 8),
        y=y,
        w=3.0,
        null_class=unet.null_class,
        generator=torch.Generator().manual_seed(0),
    )
    assert r.x.shape == (6, 1, 8, 8) and torch.isfinite(r.x).all()
    assert r.nfe == 4 * 2  # two passes a step at w = 3


def test_guidance_zero_is_unconditional_sampling(unet):
    schedule = make_schedule("linear", 50, clip_sample=True)
    y = torch.arange(8) % 10
    guided = sample(
        unet,
        schedule,
        "ddim",
        5,
        (8, 1, 8, 8),
        y=y,
        w=0.0,
        null_class=unet.null_class,
        generator=torch.Generator().manual_seed(3),
    )
    uncond = sample(
        unet, schedule, "ddim", 5, (8, 1, 8, 8), y=None, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(guided.x, uncond.x) and guided.nfe == uncond.nfe == 5
    other = sample(
        unet,
        schedule,
        "ddim",
        5,
        (8, 1, 8, 8),
        y=y,
        w=3.0,
        null_class=unet.null_class,
        generator=torch.Generator().manual_seed(3),
    )
    assert not torch.equal(guided.x, other.x)


def test_reference_classifier_is_cached_and_reused(tmp_path, monkeypatch):
    data = load_images("digits")  # 1500 training images: 1250 for the classifier, 250 for the floor
    trained, seen = [], []
    real_train, real_fit = reference.train_reference, reference.train_classifier
    monkeypatch.setattr(
        reference, "train_reference", lambda *a, **k: trained.append(1) or real_train(*a, **k)
    )
    monkeypatch.setattr(
        reference, "train_classifier", lambda x, *a, **k: seen.append(x.clone()) or real_fit(x, *a, **k)
    )
    first, cached1 = reference.load_or_train(tmp_path, data, "cpu", log=lambda m: None)
    second, cached2 = reference.load_or_train(tmp_path, data, "cpu", log=lambda m: None)
    assert (cached1, cached2, len(trained)) == (False, True, 1)
    assert first.test_accuracy == second.test_accuracy > 0.8  # real digits: a real classifier
    j1, j2 = first.judge(data.x_test), second.judge(data.x_test)
    assert np.array_equal(j1.predictions, j2.predictions) and j1.features.shape == (len(data.x_test), 128)
    # The floor pool: training images the classifier never trained on, and the only ones the floor uses
    rows = {r.tobytes(): i for i, r in enumerate(data.x_train.numpy())}
    trained_on = {rows[r.tobytes()] for r in seen[0].numpy()}
    pool = set(reference.floor_pool(len(data.x_train)).tolist())
    assert len(trained_on) == 1250 and not trained_on & pool and len(pool) == 250
    judged = []
    real_judge = first.judge
    monkeypatch.setattr(first, "judge", lambda x, **k: judged.append(x.clone()) or real_judge(x, **k))
    # FID's expectation falls as N grows (its bias), KID's does not (0 inside its interval at both sizes)
    small, large = (
        first.floor(data.x_train, data.x_test, 10, 5, seed=0),
        first.floor(data.x_train, data.x_test, 60, 3, 0),
    )
    floor_rows = [rows[r.tobytes()] for x in judged for r in x.numpy() if r.tobytes() in rows]
    assert len(floor_rows) == 230 and set(floor_rows) <= pool and len(set(floor_rows[50:])) == 180
    assert small["classifier_fid_floor_ci_low"] > large["classifier_fid_floor_ci_high"], (small, large)
    for f in (small, large):
        assert f["classifier_kid_floor_ci_low"] <= 0 <= f["classifier_kid_floor_ci_high"], f
    other = load_images("digits", n_train=400, image_size=16)  # another size: another classifier
    assert reference.cache_paths(tmp_path, other)[0] != reference.cache_paths(tmp_path, data)[0]


def test_data_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "cache"))
    d = load_images("digits", image_size=16)
    assert d.shape == (1, 16, 16) and d.num_classes == 10 and -1 <= d.x_train.min() < d.x_train.max() <= 1
    rng = np.random.default_rng(0)
    npz = tmp_path / "fake.npz"
    np.savez(
        npz,
        x_train=rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8),
        y_train=np.arange(20) % 3,
        x_test=rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8),
        y_test=np.arange(6) % 3,
    )
    c = load_images("cifar10", path=str(npz))
    assert c.shape == (3, 4, 4) and c.class_names == ["airplane", "automobile", "bird"]
    (tmp_path / "cache").mkdir()
    npz.rename(tmp_path / "cache" / "cifar10.npz")  # a lab's copy in $WORKBENCH_DATA: no path, no download
    assert torch.equal(load_images("cifar10").x_test, c.x_test)
    for cls in ("cat", "dog"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(
                tmp_path / "folder" / cls / f"{i}.png"
            )
    f = load_images("imagefolder", path=str(tmp_path / "folder"), test_fraction=0.2)
    assert (
        f.class_names == ["cat", "dog"]
        and len(f.x_train) == 8
        and len(f.x_test) == 2
        and f.shape == (1, 6, 6)
    )
    monkeypatch.setattr(
        "torchvision.datasets.MNIST.__init__", lambda *a, **k: (_ for _ in ()).throw(OSError("offline"))
    )
    with pytest.raises(DataError, match="data.path"):
        load_images("mnist")
    with pytest.raises(DataError, match="no such .npz"):
        load_images("mnist", path=str(tmp_path / "missing.npz"))
    with pytest.raises(DataError, match="imagefolder needs data.path"):
        load_images("imagefolder")


DIGITS_MODEL = "\n".join(  # a tiny class-conditional images run, named for specs that build on it
    [
        "kind: images",
        "name: digits-model",
        "timesteps: 20",
        "data: {name: digits, n_train: 300}",
        "model: {channels: [16, 32], attention: [false, true]}",
        "train: {steps: 10, batch_size: 32, checkpoint_every: 10}",
        "sample: {sampler: {name: ddim, steps: 5}, n_samples: 20, grid_columns: 2, "
        "guidance_scales: [0.0, 1.0, 3.0]}",
    ]
)


def test_images_and_sampling_runs_through_the_cli(home, tmp_path):
    """An images run reports its summary; a sampling run samples its model, named by experiment (a chain
    of committed spec files); the reference is reused."""
    spec = write_spec(tmp_path, DIGITS_MODEL)
    (img,) = run_spec(home, spec)
    assert img["status"] == "succeeded", img["error"]
    s = img["summary"]
    assert 0.8 < s["reference_accuracy"] <= 1 and s["classifier_fid"] > 0
    assert list(s["guided_accuracy"]) == ["0.0", "1.0", "3.0"]
    assert [r["nfe"] for r in img["tables"]["guidance"]] == [5, 5, 10]

    spec2 = write_spec(
        tmp_path,
        "kind: sampling\nmodel_run: {experiment: digits-model}\nsamplers: [{name: ddim}, "
        "{name: dpmsolver++}, {name: euler}]\nsteps: [2, 4]\nn_samples: 20\n",
        "s.yaml",
    )
    (smp,) = run_spec(home, spec2)
    assert smp["status"] == "succeeded", smp["error"]
    events = [e.message for e in queries.events(Store(home=home), smp["id"])]
    assert f"using the model of run {img['id']} (digits-model)" in events, events
    rows = smp["tables"]["samplers"]
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in rows] == [
        ("ddpm", 20, 20),
        ("ddim", 2, 2),
        ("ddim", 4, 4),
        ("dpmsolver++", 2, 2),
        ("dpmsolver++", 4, 4),
        ("euler", 2, 2),
        ("euler", 4, 4),
    ]
    for r in rows:
        assert (
            {"sampler", "steps", "nfe", "seconds", "images_per_second", "classifier_fid", "class_accuracy"}
            <= set(r)
            and r["classifier_fid"] > 0
            and r["seconds"] > 0
        )
    for r in rows:  # every figure over the smoke preset's 3 sets of 20, inside its own interval
        assert r["classifier_fid_n"] == r["classifier_kid_n"] == r["classifier_fid_floor_n"] == 3
        assert r["class_accuracy_n"] == 60
        assert r["classifier_fid_ci_low"] <= r["classifier_fid"] <= r["classifier_fid_ci_high"]
    assert "verdict" not in rows[0]  # the reference itself
    assert all(r["verdict"] in ("better", "matches", "worse", "unresolved") for r in rows[1:])
    ref, s = rows[0], smp["summary"]
    margin = 0.1 * (ref["classifier_fid"] - ref["classifier_fid_floor"])  # the default match_margin
    assert all(r["margin_classifier_fid"] == pytest.approx(margin) for r in rows[1:])
    assert s["verdicts_compared"] == 6 and s["margin_classifier_fid"] == pytest.approx(margin)
    for r in rows[1:]:
        assert 0 <= r["p_difference"] <= 1 and 0 <= r["p_equivalence"] <= 1
    assert {"fid_vs_nfe", "samplers_side_by_side"} <= {a["name"] for a in smp["artifacts"]}
    trained = [f for f in (home / "cache" / "reference").glob("*.safetensors")]
    assert len(trained) == 1  # the sampling run reused the images run's reference classifier


def test_sampling_rejects_a_run_that_is_not_a_finished_images_run(home, tmp_path):
    (bad,) = run_spec(home, write_spec(tmp_path, "kind: sampling\nmodel_run: 999\n"))
    assert bad["status"] == "failed" and "model_run: run 999: no such run" in bad["error"]


def test_spec_checks():
    with pytest.raises(Exception, match="exactly one of model_run"):
        resolve(
            sampling.Spec, {"kind": "sampling", "model_run": 3, "train": {"kind": "images", "timesteps": 50}}
        )
    assert resolve(sampling.Spec, {"kind": "sampling", "preset": "paper"}).train.data.name == "mnist"
    cifar = resolve(
        images.Spec, {"kind": "images", "preset": "paper", "data": {"name": "cifar10"}, "train": {"steps": 7}}
    )
    assert cifar.model.channels == [128, 256, 256, 256] and cifar.data.hflip and cifar.train.steps == 7
    assert cifar.train.batch_size == 128  # the CIFAR-10 paper sizes, under the document's own fields
    assert resolve(images.Spec, {"kind": "images", "preset": "paper"}).model.channels == [64, 128, 256]
    s = resolve(sampling.Spec, {"kind": "sampling", "model_run": 4})
    assert s.train is None  # the smoke preset's embedded training gives way to model_run
    s = resolve(sampling.Spec, {"kind": "sampling"})
    assert s.train.train.steps == 100 and s.train.train.batch_size == 128  # the embedded spec got its preset
    with pytest.raises(Exception, match="cannot halve"):
        resolve(
            images.Spec,
            {
                "kind": "images",
                "data": {"name": "mnist"},
                "model": {"channels": [32, 32, 32, 32], "attention": [False] * 4},
            },
        )


def test_show_json_of_an_images_run_has_the_documented_keys(store):
    spec = tiny_spec(train={"steps": 4}, sample={"every": 0, "guidance_scales": [1.0, 3.0]})
    rid = new_run(store, spec)
    images.run(RunContext(store, rid), spec)
    s = show(store, rid).as_json()["summary"]
    assert {"reference_accuracy", "classifier_fid", "guided_accuracy"} <= set(s)
    assert list(s["guided_accuracy"]) == ["1.0", "3.0"]


def test_image_data_fingerprint_tracks_the_test_set():
    d = load_images("digits", n_train=100)
    e = ImageData(d.name, d.x_train, d.y_train, d.x_test.clone(), d.y_test, d.class_names)
    assert d.fingerprint() == e.fingerprint()
    e.x_test[0, 0, 0, 0] = 0.5
    assert d.fingerprint() != e.fingerprint()


def test_relative_data_path_is_taken_from_the_spec_file_and_stored_absolute(home, tmp_path, monkeypatch):
    import json
    import subprocess

    from tests.conftest import subprocess_env, wb_command

    (tmp_path / "specs" / "data").mkdir(parents=True)
    npz = tmp_path / "specs" / "data" / "tiny.npz"
    np.savez(
        npz,
        x_train=np.zeros((4, 8, 8), np.uint8),
        y_train=np.arange(4) % 2,
        x_test=np.zeros((2, 8, 8), np.uint8),
        y_test=np.arange(2),
    )
    spec = write_spec(tmp_path / "specs", "kind: images\ndata: {name: mnist, path: data/tiny.npz}\n")
    monkeypatch.chdir(tmp_path)  # not the spec's folder: the path must not depend on where we stand
    env = subprocess_env(home)
    out = subprocess.run(
        wb_command("submit", spec, "--no-worker", "--json"), env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    (rid,) = json.loads(out.stdout)["run_ids"]
    rec = json.loads(
        subprocess.run(
            wb_command("show", rid, "--json"), env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert rec["spec"]["data"]["path"] == str(npz.resolve())

    bad = write_spec(
        tmp_path / "specs", "kind: images\ndata: {name: mnist, path: data/nope.npz}\n", "bad.yaml"
    )
    out = subprocess.run(
        wb_command("submit", bad, "--no-worker", "--json"), env=env, capture_output=True, text=True
    )
    assert (
        out.returncode == 2
        and "bad.yaml:2: data.path:" in out.stderr
        and "nope.npz does not exist" in out.stderr
    )
    runs = json.loads(
        subprocess.run(wb_command("runs", "--json"), env=env, capture_output=True, text=True).stdout
    )
    assert [r["id"] for r in runs] == [rid]  # the bad spec stored nothing


def test_inception_fid_pipeline_through_torchmetrics_agrees_with_our_frechet_distance(tmp_path):
    """InceptionFID (torchmetrics' FID: [-1, 1] -> [0, 1] RGB, chunks, real features kept across sets)
    with a real trained network in Inception's place, the reference classifier on real digits (the
    Inception weights are a download): its FID equals our frechet_distance of the same features, and
    noisy digits score far worse than clean ones."""
    from workbench.jobs.metrics.distances import frechet_distance
    from workbench.jobs.metrics.inception import InceptionFID

    data = load_images("digits", n_train=400)
    judge, _ = reference.load_or_train(tmp_path, data, "cpu", log=lambda m: None)

    class Features(
        torch.nn.Module
    ):  # what torchmetrics hands it: [0, 1] RGB; the classifier wants [-1, 1] gray
        num_features = reference.FEATURES

        def forward(self, x):
            return judge.net.body(x[:, :1] * 2 - 1).double()

    fid = InceptionFID("cpu", feature=Features(), batch_size=64).set_real(data.x_test)
    clean = data.x_train[:300]
    noisy = (clean + 0.5 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    ours = frechet_distance(judge.judge(clean).features, judge.judge(data.x_test).features)
    assert fid(clean) == pytest.approx(ours, rel=1e-3)
    assert fid(noisy) > 3 * fid(clean)
    assert fid(clean) == pytest.approx(ours, rel=1e-3)  # the real set's features were kept
    # the image kinds' figure: set by set (one set of N each, as published FIDs are), mean and interval
    sets = [clean[:100], clean[100:200], noisy[:100]]
    out, per_set = judge.quality(torch.cat(sets), None, data.x_test, 3, fid)
    assert per_set["inception_fid"] == pytest.approx([fid(s) for s in sets])
    assert out["inception_fid_n"] == 3
    assert out["inception_fid_ci_low"] < out["inception_fid"] < out["inception_fid_ci_high"]
    train_ref = resolve(sampling.Spec, {"kind": "sampling", "model_run": 1, "inception_reference": "train"})
    assert train_ref.inception_real(data) is data.x_train
    assert resolve(sampling.Spec, {"kind": "sampling", "model_run": 1}).inception_real(data) is data.x_test


def test_inception_fid_without_its_network_fails_before_training(store, tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a checkpoint")
    spec = tiny_spec(sample={"inception_fid": True, "inception_weights": str(bad)})
    rid = new_run(store, spec)
    # With torch-fidelity (pip install 'workbench[fid]') the bad file is what fails; without it, the
    # missing package: either way the message says which, and the run fails before it trains.
    import importlib.util

    expected = (
        "cannot load the Inception weights"
        if importlib.util.find_spec("torch_fidelity")
        else "inception_fid needs torch-fidelity"
    )
    with pytest.raises(RuntimeError, match=expected):
        images.run(RunContext(store, rid), spec)
    assert not artifacts(store, rid, "checkpoint")  # it failed first, not after training


@pytest.mark.slow
def test_two_real_sets_unseen_by_the_judge_give_a_kid_floor_interval_covering_0():
    """200 simulated floors through the real code path (ReferenceClassifier.floor, a seeded ReferenceCNN):
    5 sets of 100 floor-pool images and 1000 reference images, all from one distribution, none seen by
    the classifier. The KID interval must cover 0 in about 95 % of them (counted; measured 0.94 at 100
    repeats); a biased KID (the V-statistic, diagonal kept) or floor sets drawn from the reference images
    themselves would not."""
    torch.manual_seed(0)
    judge = reference.ReferenceClassifier(ReferenceCNN(1, 10), {}, "cpu")
    g = torch.Generator().manual_seed(1)

    def draw(n):
        base = torch.randn(n, 1, 8, 8, generator=g)
        return (0.5 * base + 0.3 * base.roll(1, -1)).clamp(-1, 1)

    hits = 0
    for r in range(200):
        pool, real = draw(6 * 500), draw(1000)
        f = judge.floor(pool, real, 100, 5, seed=r)
        hits += f["classifier_kid_floor_ci_low"] <= 0 <= f["classifier_kid_floor_ci_high"]
    assert 0.90 <= hits / 200 <= 0.99, hits / 200

"""Published diffusers models (`model: {pretrained: ...}`): tiny models saved here with save_pretrained and
read through the same code a Hub model is, from a local folder and from a Hub cache with the Hub
unreachable; every kind that takes a model runs end to end from one."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import subprocess_env, wb_command, write_spec
from tests.test_ddpm_kind import run_spec
from tests.test_images import DIGITS_MODEL
from workbench.jobs.diffusion import image_model, pretrained
from workbench.jobs.diffusion.denoisers import UNetDenoiser
from workbench.jobs.diffusion.samplers import make_sampler, sample_batched
from workbench.jobs.diffusion.schedules import make_schedule
from workbench.store import queries
from workbench.store.db import Store

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def save_tiny(
    folder: Path,
    classes: int = 0,
    prediction: str = "epsilon",
    size: int = 8,
    channels: int = 1,
    timesteps: int = 50,
    pickled: bool = False,
    seed: int = 0,
) -> Path:
    """A tiny diffusers UNet2DModel (random weights) and its scheduler config, as a published one is laid
    out: config.json and weights at the top, scheduler/scheduler_config.json."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
        num_class_embeds=classes or None,
    )
    unet.save_pretrained(str(folder), safe_serialization=not pickled)
    DDPMScheduler(num_train_timesteps=timesteps, prediction_type=prediction, clip_sample=True).save_config(
        str(folder / "scheduler")
    )
    return folder


def into_hub_cache(cache: Path, repo: str, folder: Path, commit: str = COMMIT) -> Path:
    """`folder` laid out as huggingface_hub's cache holds repo@main (refs/main -> the snapshot)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    return root / "snapshots" / commit


def ref(folder: Path, **fields) -> pretrained.PretrainedModel:
    return pretrained.PretrainedModel(pretrained=str(folder), **fields)


# --- the same model, read two ways ------------------------------------------------------------------


@pytest.mark.parametrize("classes, clip", [(0, False), (10, True)])
def test_a_workbench_model_read_as_a_published_one_samples_identically(tmp_path, classes, clip):
    """A workbench UNet saved in diffusers' layout and read back through `pretrained:` gives bit-identical
    samples for every sampler, guided where it is class-conditional (its null class found as the last).
    Breaks if the schedule read from the config differs in any setting the samplers use (seen red with
    clip_sample dropped: diffusers' default is true), or if the null class is mapped differently (seen
    red with it taken as the first)."""
    torch.manual_seed(1)
    ours = UNetDenoiser((1, 8, 8), (16, 32), (False, True), 1, 0.0, classes, 8, 8).eval()
    schedule = make_schedule("cosine", 40, clip_sample=clip)
    pretrained.save_workbench_model(ours, schedule, tmp_path / "m")
    loaded = pretrained.load(ref(tmp_path / "m", class_null=bool(classes)), "cpu")
    assert loaded.model.num_classes == classes and loaded.model.null_class == (classes or None)
    y = torch.arange(10) % 10 if classes else None
    w = 3.0 if classes else 1.0
    for name in ("ddpm", "ddim", "dpmsolver++", "sde-dpmsolver++", "unipc", "euler"):
        a = sample_batched(
            ours, schedule, name, 6, (10, 1, 8, 8), y, w, ours.null_class if classes else None, 3, 4
        )
        b = sample_batched(
            loaded.model, loaded.schedule, name, 6, (10, 1, 8, 8), y, w, loaded.model.null_class, 3, 4
        )
        assert torch.equal(a.x, b.x), name
        assert a.nfe == b.nfe


def test_pickled_weights_only_when_allowed_and_then_the_same_model(tmp_path):
    save_tiny(tmp_path / "safe", classes=3, seed=5)
    save_tiny(tmp_path / "pickled", classes=3, seed=5, pickled=True)
    assert not (tmp_path / "pickled" / pretrained.WEIGHTS).exists()
    with pytest.raises(ValueError, match="model.allow_pickle: .* only pickled weights"):
        ref(tmp_path / "pickled")
    a = pretrained.load(ref(tmp_path / "safe"), "cpu").model.state_dict()
    b = pretrained.load(ref(tmp_path / "pickled", allow_pickle=True), "cpu").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_config_larger_than_its_weights_is_refused_before_anything_is_allocated(tmp_path):
    """config.json is untrusted: one that describes a far larger UNet than its weights file holds is
    refused, sized on the meta device (a 4096-channel UNet would take gigabytes before loading failed)."""
    folder = unet_config(save_tiny(tmp_path / "m"), block_out_channels=[2048, 4096], norm_num_groups=32)
    with pytest.raises(
        ValueError, match="describes a UNet of .*M parameters and its weights file holds 0.2 MB"
    ):
        pretrained.load(ref(folder), "cpu")


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_the_prediction_type_reaches_every_sampler(tmp_path, prediction):
    """The config's prediction type is the schedule's and so every sampler's (what they do with it is
    checked against the exact Gaussian in tests/test_exact_samplers.py)."""
    loaded = pretrained.load(ref(save_tiny(tmp_path / "m", prediction=prediction)), "cpu")
    assert loaded.record["prediction_type"] == prediction
    for name in ("ddpm", "ddim", "dpmsolver++", "sde-dpmsolver++", "unipc", "euler"):
        assert make_sampler(name, loaded.schedule).config.prediction_type == prediction, name


# --- the Hub's cache, and the Hub out of reach --------------------------------------------------------


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hub cache, and a Hub address nothing answers (a closed local port)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return cache


def test_offline_the_cache_serves_and_the_commit_is_recorded(tmp_path, hub, monkeypatch):
    from huggingface_hub import constants

    into_hub_cache(hub, "lab/tiny-digits", save_tiny(tmp_path / "m"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = pretrained.load(pretrained.PretrainedModel(pretrained="lab/tiny-digits"), "cpu")
    assert loaded.record["revision"] == COMMIT and loaded.record["pretrained"] == "lab/tiny-digits"
    by_commit = pretrained.load(
        pretrained.PretrainedModel(pretrained="lab/tiny-digits", revision=COMMIT), "cpu"
    )
    assert by_commit.record["weights_sha256"] == loaded.record["weights_sha256"]
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set, and it is not in the cache"):
        pretrained.load(pretrained.PretrainedModel(pretrained="lab/tiny-digits", revision="v2"), "cpu")


def test_an_unreachable_hub_falls_back_to_the_cache_or_says_how_to_download(tmp_path, hub):
    into_hub_cache(hub, "lab/tiny-digits", save_tiny(tmp_path / "m"))
    assert (
        pretrained.load(pretrained.PretrainedModel(pretrained="lab/tiny-digits"), "cpu").record["revision"]
        == COMMIT
    )
    with pytest.raises(ValueError) as e:
        pretrained.load(pretrained.PretrainedModel(pretrained="lab/not-here", revision="v1"), "cpu")
    message = str(e.value)
    assert "the Hub cannot be reached" in message
    assert "huggingface-cli download lab/not-here --revision v1" in message and str(hub) in message
    assert not (hub / "models--lab--not-here").exists()  # nothing half-downloaded


def test_only_the_model_files_are_downloaded_and_only_up_to_the_limit(tmp_path, monkeypatch):
    """What the Hub would be asked for: the UNet's config and safetensors and the scheduler config, not
    the pickled copy, a VAE or anything else in the repository; a model over max_download_gb is refused
    before any download. (The Hub's answers are stood in for: these machines cannot reach it.)"""
    from types import SimpleNamespace

    import huggingface_hub

    files = {
        "model_index.json": 10,
        "unet/config.json": 10,
        "unet/diffusion_pytorch_model.safetensors": 3_000_000_000,
        "unet/diffusion_pytorch_model.bin": 3_000_000_000,
        "vae/diffusion_pytorch_model.safetensors": 9_000_000_000,
        "scheduler/scheduler_config.json": 10,
        "README.md": 10,
    }
    info = SimpleNamespace(
        sha=COMMIT, siblings=[SimpleNamespace(rfilename=n, size=s) for n, s in files.items()]
    )
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *a, **k: info)
    asked = {}

    def snapshot_download(repo, revision, allow_patterns):
        asked.update(repo=repo, revision=revision, files=allow_patterns)
        return str(save_tiny(tmp_path / "snap"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(pretrained, "offline", lambda: False)
    folder, commit = pretrained.download(pretrained.PretrainedModel(pretrained="org/pipe"))
    assert commit == COMMIT and asked["revision"] == COMMIT  # the commit resolved once, then pinned
    assert sorted(asked["files"]) == [
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    with pytest.raises(ValueError, match="max_download_gb: org/pipe's model files are 3.0 GB, over 2"):
        pretrained.download(pretrained.PretrainedModel(pretrained="org/pipe", max_download_gb=2))
    del files["unet/diffusion_pytorch_model.safetensors"]  # a repository with pickled weights only
    info.siblings = [SimpleNamespace(rfilename=n, size=s) for n, s in files.items()]
    asked.clear()
    with pytest.raises(ValueError, match="model.allow_pickle: .* only pickled weights"):
        pretrained.download(pretrained.PretrainedModel(pretrained="org/pipe"))
    with pytest.raises(ValueError, match="has no vae/config.json: not a diffusers model folder"):
        pretrained.download(pretrained.PretrainedModel(pretrained="org/pipe", subfolder="vae"))
    assert asked == {}  # refused from the listing: nothing downloaded


# --- bad input -----------------------------------------------------------------------------------------


def unet_config(folder: Path, **changes) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return folder


BAD = [
    ("not a folder nor a repo", lambda d: "pretrained: ./nowhere", "neither a folder here"),
    ("a repo id with a path in it", lambda d: "pretrained: a/b/c", "neither a folder here"),
    ("revision of a folder", lambda d: f"pretrained: {d}\n  revision: main", "revision: only for Hub"),
    ("subfolder out of the model", lambda d: f"pretrained: {d}\n  subfolder: ../x", "relative folder inside"),
    ("pickled only", lambda d: f"pretrained: {save_tiny(d / 'p', pickled=True)}", "model.allow_pickle"),
    (
        "not a UNet2DModel",
        lambda d: f"pretrained: {unet_config(save_tiny(d / 'c'), _class_name='UNet2DConditionModel')}",
        "describes a UNet2DConditionModel model, not a diffusers UNet2DModel",
    ),
    (
        "no config at all",
        lambda d: f"pretrained: {(d / 'empty').mkdir() or d / 'empty'}",
        "config.json is missing",
    ),
    (
        "predicts its variance",
        lambda d: f"pretrained: {unet_config(save_tiny(d / 'v'), out_channels=2)}",
        "also predicts its variance",
    ),
    (
        "a huge claimed UNet",
        lambda d: f"pretrained: {unet_config(save_tiny(d / 'h'), block_out_channels=[8, 100000])}",
        "block_out_channels: each must be an integer from 1 to 4096",
    ),
    (
        "size mismatch",
        lambda d: f"pretrained: {save_tiny(d / 's', size=16)}",
        "digits images are 8x8; the model takes 16x16",
    ),
    (
        "channels mismatch",
        lambda d: f"pretrained: {save_tiny(d / 'rgb', channels=3)}",
        "digits images have 1 channels; the model takes 3",
    ),
]


@pytest.mark.parametrize("case, model, message", BAD, ids=[b[0] for b in BAD])
def test_bad_models_are_refused_at_submit_and_nothing_is_stored(cli, tmp_path, case, model, message):
    spec = write_spec(
        tmp_path,
        f"kind: sampling\nmodel:\n  {model(tmp_path)}\n  data: {{name: digits}}\n",
    )
    code, out, err = cli("submit", spec, "--no-worker")
    assert code == 2, (out, err)
    assert message in " ".join((out + err).split()), out + err
    assert cli("runs", "--json")[1].strip() in ("[]", "")


def test_guidance_needs_a_conditional_model_with_a_null_class(cli, tmp_path):
    plain = save_tiny(tmp_path / "plain")
    no_null = save_tiny(tmp_path / "classes", classes=10)
    for folder, extra, message in (
        (plain, "", "the model is unconditional"),
        (no_null, "", "has none (set model.class_null: true"),
    ):
        spec = write_spec(
            tmp_path,
            f"kind: sampling\nguidance_scale: 3\nmodel: {{pretrained: {folder}, data: {{name: digits}}{extra}}}\n",
        )
        code, out, err = cli("submit", spec, "--no-worker")
        assert code == 2 and message in " ".join((out + err).split()), out + err
    ok = write_spec(
        tmp_path,
        f"kind: sampling\nguidance_scale: 3\nmodel: {{pretrained: {no_null}, class_null: true, data: {{name: digits}}}}\n",
    )
    assert cli("validate", ok)[0] == 0


def test_a_hub_model_in_the_cache_is_checked_at_submit(tmp_path, home):
    """What the cache holds is known before the run: a size mismatch is refused at submit (exit 2)."""
    cache = tmp_path / "hf"
    into_hub_cache(cache, "lab/tiny-16", save_tiny(tmp_path / "m", size=16))
    spec = write_spec(tmp_path, "kind: sampling\nmodel: {pretrained: lab/tiny-16, data: {name: digits}}\n")
    env = subprocess_env(home, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    r = subprocess.run(wb_command("submit", spec, "--no-worker"), env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "digits images are 8x8; the model takes 16x16" in r.stdout + r.stderr


# --- every kind end to end -------------------------------------------------------------------------------

SAMPLING = "kind: sampling\nsamplers: [{name: ddim}, {name: dpmsolver++}]\nsteps: [2, 4]\nn_samples: 20\nguidance_scale: 2\n"


def test_sampling_a_published_copy_of_a_run_gives_the_runs_results(home, tmp_path):
    """An images run published in diffusers' layout (`workbench publish RUN --to-folder`: exactly its four
    files), then a sampling run from `model_run:` and one from the published folder: the same table to
    the last digit (the same samples, judged the same way), the folder's digest recorded."""
    img, from_run = run_spec(  # one worker: the model, then sampling it by its experiment
        home,
        write_spec(tmp_path, DIGITS_MODEL),
        write_spec(tmp_path, SAMPLING + "model_run: {experiment: digits-model}\n", "a.yaml"),
    )
    assert img["status"] == "succeeded", img["error"]
    env = subprocess_env(home)
    out = tmp_path / "exported"
    r = subprocess.run(
        wb_command("publish", img["id"], "--to-folder", out), env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(
        pretrained.DIFFUSERS_FILES
    )
    card = (out / "README.md").read_text()
    assert "library_name: diffusers" in card and "class_null: true" in card and "classifier-FID: " in card

    (published,) = run_spec(
        home,
        write_spec(
            tmp_path,
            SAMPLING
            + "model: {pretrained: ./exported, class_null: true, data: {name: digits, n_train: 300}}\n",
            "b.yaml",
        ),
    )
    assert from_run["status"] == published["status"] == "succeeded", (from_run["error"], published["error"])
    strip = ("seconds", "images_per_second")
    rows = [
        [{k: v for k, v in r.items() if k not in strip} for r in x["tables"]["samplers"]]
        for x in (from_run, published)
    ]
    assert rows[0] == rows[1]
    record = published["summary"]["pretrained"]
    assert record["pretrained"] == str(tmp_path / "exported") and record["revision"] is None
    assert len(record["weights_sha256"]) == 64 and record["prediction_type"] == "epsilon"
    events = [e.message for e in queries.events(Store(home=home), published["id"])]
    assert any("weights sha256" in e for e in events), events


def offline_env(home: Path, cache: Path) -> dict:
    return subprocess_env(home, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")


def run_offline(home: Path, spec: Path, cache: Path) -> dict:
    (rec,) = run_spec(home, spec, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    return rec


def test_feature_sweep_from_a_cached_hub_model_offline(home, tmp_path):
    """A v-predicting class-conditional model (its null class last) from the Hub cache with the Hub off:
    refused without allow_labelled_model at submit (the cache is read then), probed with it, its rows
    marked as from a model that saw labels, the commit recorded."""
    cache = tmp_path / "hf"
    into_hub_cache(cache, "lab/tiny-digits", save_tiny(tmp_path / "m", classes=11, prediction="v_prediction"))
    text = (
        "kind: feature_sweep\nmodel: {pretrained: lab/tiny-digits, class_null: true, data: {name: digits}}\n"
        "timesteps: [5, 20]\nblocks: [down1, mid]\nks: [1, 5]\nrepeats: 2\nheads: [linear]\n"
        "baselines: [pixels]\nval_per_class: 5\n"
    )
    r = subprocess.run(
        wb_command("submit", write_spec(tmp_path, text, "a.yaml"), "--no-worker"),
        env=offline_env(home, cache),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "allow_labelled_model" in r.stdout + r.stderr
    rec = run_offline(home, write_spec(tmp_path, text + "allow_labelled_model: true\n"), cache)
    assert rec["status"] == "succeeded", rec["error"]
    assert rec["summary"]["pretrained"]["revision"] == COMMIT
    assert rec["summary"]["pretrained"]["prediction_type"] == "v_prediction"
    rows = [r for r in rec["tables"]["probes"] if r["source"] == "diffusion"]
    assert {(r["t"], r["block"]) for r in rows} >= {(5, "down1"), (20, "mid")}
    assert all(r["model_saw_labels"] for r in rows)


def test_augmentation_from_a_published_class_model(home, tmp_path):
    folder = save_tiny(tmp_path / "gen", classes=11)  # 10 digits and the null class, last
    base = (
        "kind: augmentation\ndata: {name: digits}\nclasses: [0, 1]\nreal_per_class: [5]\nratios: [1]\nseeds: 2\n"
        "classifier: {steps: 20}\n"
        f"diffusion: {{model: {{pretrained: {folder}, class_null: true}}, sampler: {{name: ddim, steps: 3}}"
    )
    r = subprocess.run(
        wb_command("submit", write_spec(tmp_path, base + "}\n", "a.yaml"), "--no-worker"),
        env=subprocess_env(home),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "diffusion.allow_outside_data: " in r.stdout + r.stderr
    rec = run_spec(home, write_spec(tmp_path, base + ", allow_outside_data: true}\n", "b.yaml"))[0]
    assert rec["status"] == "succeeded", rec["error"]
    assert rec["summary"]["pretrained"]["pretrained"] == str(folder)


def test_an_attribution_zoo_of_published_models(home, tmp_path):
    """Three published models (two unconditional, one class model without a null class drawn at w = 1)
    as three classes: drawn, trained on and scored."""
    a, b = save_tiny(tmp_path / "a", seed=1), save_tiny(tmp_path / "b", seed=2)
    c = save_tiny(tmp_path / "c", classes=4, seed=3)
    spec = write_spec(
        tmp_path,
        "kind: attribution\n"
        "recipes: [{name: spectrum, patch_size: 8}]\n"  # the drawing is what is tested: the fastest recipe
        "data:\n  source: zoo\n  train_per_class: 24\n  test_per_class: 12\n  sampler: {name: ddim, steps: 3}\n"
        f"  runs: [{{model: {{pretrained: {a}}}}}, {{model: {{pretrained: {b}}}}}, "
        f"{{model: {{pretrained: {c}}}, guidance_scale: 1}}]\n",
    )
    rec = run_spec(home, spec)[0]
    assert rec["status"] == "succeeded", rec["error"]
    assert sorted(rec["summary"]["pretrained"]) == sorted(str(p) for p in (a, b, c))
    assert [r["class"] for r in rec["tables"]["per_class"]] == ["a", "b", "c"]  # each folder's name
    assert rec["summary"]["n_test"] == 36 and [r["support"] for r in rec["tables"]["per_class"]] == [12] * 3


def test_an_unconditional_published_generator_is_labelled_by_a_classifier(home, tmp_path):
    """google/ddpm-cifar10-32 is unconditional: its draws get the class a classifier gives them. Without
    label_with the run is refused at submit; with it, each seed's set holds the same count of each class,
    labelled as the reference classifier labels them, draws it calls another digit dropped (checked on the
    cached sets against that network)."""
    import numpy as np

    from workbench.jobs.metrics import reference

    folder = save_tiny(tmp_path / "uncond", seed=4)
    base = (
        "kind: augmentation\ndata: {name: digits}\nclasses: [8, 9]\nreal_per_class: [5]\nratios: [2]\nseeds: 2\n"
        "classifier: {steps: 20}\n"
        f"diffusion: {{model: {{pretrained: {folder}}}, sampler: {{name: ddim, steps: 3}}, guidance_scale: 1, "
        "allow_outside_data: true"
    )
    env = subprocess_env(home)
    r = subprocess.run(
        wb_command("submit", write_spec(tmp_path, base + "}\n", "a.yaml"), "--no-worker"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "set diffusion.label_with" in r.stdout + r.stderr
    # (a random tiny UNet's draws look most like 8s and 9s to the digits classifier: those two classes)
    rec = run_spec(home, write_spec(tmp_path, base + ", label_with: reference}\n", "b.yaml"))[0]
    assert rec["status"] == "succeeded", rec["error"]
    events = [e.message for e in queries.events(Store(home=home), rec["id"])]
    assert sum("labelled by the reference classifier; kept 10 of each class" in e for e in events) == 2, (
        events
    )
    judge, _ = reference.load_or_train(
        home / "cache" / "reference",
        image_model.load_images_of(image_model.DataSpec(name="digits"), 0),
        "cpu",
        log=lambda m: None,
    )
    sets = sorted((home / "cache" / "synthetic").rglob("*.npz"))
    assert len(sets) == 2
    for path in sets:
        with np.load(path) as f:
            x, y = torch.from_numpy(f["x"]).float() / 127.5 - 1, f["y"]
        assert list(y) == [0, 1] * 10  # 10 of each class, interleaved
        called = judge.net.eval()(x).detach().argmax(1).numpy()  # among all ten digits
        assert (called == np.array([8, 9])[y]).all()  # draws it calls 0-7 were dropped


def test_a_class_the_unconditional_model_rarely_draws_fails_the_run_by_name(tmp_path):
    from types import SimpleNamespace

    from workbench.jobs.diffusion.config import SamplerSpec
    from workbench.jobs.kinds.augmentation import MAX_DRAWS_PER_IMAGE, labelled_draws

    loaded = pretrained.load(ref(save_tiny(tmp_path / "m")), "cpu")
    fixed = SimpleNamespace(
        model=loaded.model, schedule=loaded.schedule, source=SimpleNamespace(shape=(1, 8, 8))
    )
    g = SimpleNamespace(sampler=SamplerSpec(name="ddim", steps=2), batch_size=64, label_with="real")
    ctx = SimpleNamespace(device="cpu")
    calls = []

    def always_zero(x, device):
        calls.append(len(x))
        return torch.zeros(len(x), dtype=torch.long)

    with pytest.raises(
        ValueError, match="in 80 draws the real classifier called only 0 images class 1 \\(of 2"
    ):
        labelled_draws(ctx, fixed, g, always_zero, 2, 2, seed=0)
    assert sum(calls) == MAX_DRAWS_PER_IMAGE * 2 * 2

    def alternate(x, device):
        return torch.arange(len(x)) % 3 // 2  # classes 0, 0, 1, 0, 0, 1, ...: class 1 is a third

    x, y, _, drawn = labelled_draws(ctx, fixed, g, alternate, 2, 5, seed=0)
    assert y.tolist() == [0, 1] * 5 and drawn == 20  # two rounds of 10: 4 of class 1 after the first

"""The feature_sweep kind: few-shot probes on diffusion features against pixels and a VAE."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from sklearn.datasets import load_digits

from tests.conftest import subprocess_env, wb_command, write_spec
from tests.test_ddpm_kind import run_spec
from tests.test_images import new_run
from workbench.jobs.context import RunContext
from workbench.jobs.diffusion import image_model
from workbench.jobs.jobfile import resolve
from workbench.jobs.kinds import feature_sweep
from workbench.jobs.metrics.probes import kshot_subsets
from workbench.store import queries, queue

TINY_MODEL = (
    "{kind: images, timesteps: 50, data: {name: digits, n_train: 400}, "
    "model: {channels: [16, 32], attention: [false, false], conditional: false}, "
    "train: {steps: 20, batch_size: 32, checkpoint_every: 20, warmup_steps: 2}}"
)
SWEEP = """timesteps: [2, 20]
blocks: [down1, mid+up0]
ks: [1, 3]
repeats: 2
val_per_class: 10
vae: {channels: [8, 16], steps: 20, batch_size: 32}
"""
PROBE_COLUMNS = {
    "source",
    "t",
    "block",
    "pooling",
    "head",
    "k",
    "accuracy_mean",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "repeats",
}


def test_a_sweep_on_a_model_it_trains_reports_probes_baselines_and_pictures(home, tmp_path):
    """The whole kind through the CLI and the worker, with the model trained in the run (train:)."""
    spec = f"kind: feature_sweep\ntrain: {TINY_MODEL}\n{SWEEP}fixed: [{{t: 20, block: down1}}]\n"
    (trained,) = run_spec(home, write_spec(tmp_path, spec))
    assert trained["status"] == "succeeded", trained["error"]
    rows = trained["tables"]["probes"]
    # 2 timesteps x 2 block entries + pixels + vae, x 2 heads x 2 ks
    assert len(rows) == (2 * 2 + 2) * 2 * 2 and PROBE_COLUMNS <= set(rows[0])
    assert {(r["source"], r["t"], r["block"]) for r in rows} == {
        ("diffusion", 2, "down1"),
        ("diffusion", 2, "mid+up0"),
        ("diffusion", 20, "down1"),
        ("diffusion", 20, "mid+up0"),
        ("pixels", None, None),
        ("vae", None, None),
    }
    mid_up0 = next(r for r in rows if r["block"] == "mid+up0")
    assert mid_up0["features"] == 32 + 32  # the two blocks' channels side by side
    assert all(
        r["repeats"] == 2 and r["accuracy_ci_low"] <= r["accuracy_mean"] <= r["accuracy_ci_high"]
        for r in rows
    )
    s = trained["summary"]
    assert list(s["best"]) == ["1", "3"] and {
        "source",
        "t",
        "block",
        "head",
        "accuracy_mean",
        "accuracy_ci",
    } <= set(s["best"]["3"])
    assert s["headline_k"] == 3 and s["diffusion_accuracy_n"] == 2
    comparisons = trained["tables"]["comparisons"]
    # per k, head and baseline: the setting chosen on the validation images, and the fixed one
    assert sorted((c["k"], c["head"], c["versus"], c["setting"]) for c in comparisons) == sorted(
        (k, h, b, setting)
        for k in (1, 3)
        for h in ("linear", "mlp")
        for b in ("pixels", "vae")
        for setting in ("selected", "fixed")
    )
    assert {(c["t"], c["block"]) for c in comparisons if c["setting"] == "fixed"} == {(20, "down1")}
    for c in (c for c in comparisons if c["setting"] == "selected"):
        chosen = max(
            (r for r in rows if r["source"] == "diffusion" and r["k"] == c["k"] and r["head"] == c["head"]),
            key=lambda r: r["val_accuracy_mean"],
        )
        assert (c["t"], c["block"], c["selected_on"]) == (chosen["t"], chosen["block"], "val")
    assert s["selected_on"] == "val" and s["validation_images"] == 100  # 10 per class
    assert {f["versus"] for f in s["fixed"]} == {"pixels", "vae"} and len(s["fixed"]) == 2 * 2  # x 2 heads
    names = {a["name"] for a in trained["artifacts"]}
    assert {"accuracy_vs_t", "accuracy_vs_k", "vae_reconstructions", image_model.MODEL_FILE} <= names
    # The cost bar: one forward pass per timestep over the images probed (k-shot subsets and test split).
    assert s["feature_forward_passes"] == 2 * s["feature_images"] and s["feature_passes_cached"] == 0
    assert s["feature_images"] < 400 + 297  # only the training images some subset uses


def digits_npz(path, labels_seed: int | None = None):
    """scikit-learn's digits as an .npz; labels_seed: the same images with their labels shuffled."""
    d = load_digits()
    x = (d.images * 255 / 16).astype(np.uint8)
    y = d.target.copy()
    if labels_seed is not None:
        y = np.random.default_rng(labels_seed).permutation(y)
    np.savez(path, x_train=x[:1400], y_train=y[:1400], x_test=x[1400:], y_test=y[1400:])
    return path


def finished_images_run(store, conditional: bool = False) -> int:
    tiny = _tiny()
    tiny["model"]["conditional"] = conditional
    spec = resolve(image_model.ImageModelSpec, {"kind": "images", **tiny})
    rid = new_run(store, spec)
    image_model.train_model(RunContext(store, rid), spec, image_model.load_data(spec))
    queue.finish(store, rid, "w", "succeeded")
    return rid


def _tiny() -> dict:
    return {k: v for k, v in yaml.safe_load(TINY_MODEL).items() if k != "kind"}


def sweep_run(store, model_run: int, npz=None, **fields) -> dict:
    spec = resolve(
        feature_sweep.Spec,
        {
            "kind": "feature_sweep",
            "model_run": model_run,
            **({"data": {"name": "mnist", "path": str(npz)}} if npz else {}),
            **yaml.safe_load(SWEEP),
            **fields,
        },
    )
    rid = new_run(store, spec)
    ctx = RunContext(store, rid)
    feature_sweep.run(ctx, spec)
    ctx.close()
    queue.finish(store, rid, "w", "succeeded")
    return {
        **queries.show(store, rid).as_json(),
        "events": [e.message for e in queries.events(store, rid)],
        "vae_curve": queries.metric_series(store, rid, "vae/loss"),
    }


def cached_features(folder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for f in sorted(folder.rglob("*.npz")):
        with np.load(f) as z:
            out[f.name] = z["ids"], z["features"]
    return out


def test_a_finished_run_swept_again_takes_every_feature_and_the_vae_from_the_cache(store):
    model_run = finished_images_run(store)
    first, second = sweep_run(store, model_run), sweep_run(store, model_run)
    assert first["status"] == second["status"] == "succeeded"
    assert first["summary"]["model_saw_labels"] is False and first["summary"]["selected_on"] == "val"
    assert first["summary"]["feature_forward_passes"] == 2 * first["summary"]["feature_images"]
    assert second["summary"]["feature_forward_passes"] == 0  # every feature came from the cache
    assert second["summary"]["feature_passes_cached"] == 2 * second["summary"]["feature_images"]
    assert second["tables"]["probes"] == first["tables"]["probes"]
    assert len(list((store.home / "cache" / "vae").glob("*.safetensors"))) == 1  # the VAE too
    (vae,) = [e for e in second["events"] if e.startswith("VAE")]
    assert "from the cache" in vae and second["vae_curve"] == first["vae_curve"] != []  # its curves too


def test_features_are_the_same_whatever_labels_the_dataset_holds(store, tmp_path):
    """Label blindness: the same images under their true labels and under shuffled ones give identical
    features (computed afresh both times, not read from the cache); only the probes see labels."""
    model_run = finished_images_run(store, conditional=True)  # trained with labels, probed at its null class
    with pytest.raises(ValueError, match=f"model_run {model_run}: the model is class-conditional"):
        sweep_run(store, model_run)  # its features saw every training label: refused unless allowed
    cache = store.home / "cache" / "features"
    true = sweep_run(store, model_run, digits_npz(tmp_path / "true.npz"), allow_labelled_model=True)
    # allowed, and marked on every diffusion row, comparison and the summary
    assert {r["model_saw_labels"] for r in true["tables"]["probes"] if r["source"] == "diffusion"} == {True}
    assert {r["model_saw_labels"] for r in true["tables"]["probes"] if r["source"] != "diffusion"} == {False}
    assert {c["model_saw_labels"] for c in true["tables"]["comparisons"]} == {True}
    assert true["summary"]["model_saw_labels"] is True and true["summary"]["selected_on"] == "val"
    shutil.move(cache, tmp_path / "first")
    shuffled = sweep_run(
        store, model_run, digits_npz(tmp_path / "shuffled.npz", labels_seed=7), allow_labelled_model=True
    )
    assert shuffled["summary"]["feature_passes_cached"] == 0  # computed again, with the other labels

    a, b = cached_features(tmp_path / "first"), cached_features(cache)
    assert a.keys() == b.keys() and len(a) == 2 * 3  # 2 timesteps x the 3 blocks down1, mid, up0
    test_ids = feature_sweep.TEST_IDS + np.arange(397)
    for name in a:
        (ids_a, fa), (ids_b, fb) = a[name], b[name]
        common = np.intersect1d(ids_a, ids_b)
        assert np.isin(test_ids, common).all()  # every test image, and the training images both used
        np.testing.assert_array_equal(fa[np.isin(ids_a, common)], fb[np.isin(ids_b, common)])
    # the labels did reach the probes: shuffled labels leave them at chance
    acc = {
        r["k"]: r["accuracy_mean"]
        for r in shuffled["tables"]["probes"]
        if r["source"] == "pixels" and r["head"] == "linear"
    }
    true_acc = {
        r["k"]: r["accuracy_mean"]
        for r in true["tables"]["probes"]
        if r["source"] == "pixels" and r["head"] == "linear"
    }
    assert true_acc[3] > 0.6 and acc[3] < 0.25


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"blocks": ["mid", "side2"]}, "name blocks down<i>, mid or up<i>"),
        ({"blocks": ["down5"]}, "the model has 2 levels"),
        ({"timesteps": [10, 60]}, "t = 0 to 49"),
        ({"timesteps": [20, 10]}, "increasing"),
        ({"ks": ["all", 5]}, "put all last"),
        ({"ks": [5, 5]}, "distinct increasing"),
        ({"pooling": "max"}, "avg or grid<k>"),
        ({"fixed": [{"t": 7, "block": "mid"}]}, "t=7 mid is not swept"),
        ({"fixed": [{"t": 2, "block": "down1", "head": "mlp"}], "heads": ["linear"]}, "a head of"),
        ({"fixed": [{"t": 2, "block": "down1"}, {"t": 2, "block": "down1"}]}, "named twice"),
        ({"vae": {"channels": [12, 16]}}, "multiples of norm_groups"),
        (
            {"train": yaml.safe_load(TINY_MODEL.replace("conditional: false", "conditional: true"))},
            "conditional",
        ),
    ],
)
def test_a_sweep_the_model_cannot_serve_is_refused_by_field(fields, message):
    with pytest.raises(ValidationError, match=message):
        resolve(
            feature_sweep.Spec,
            {"kind": "feature_sweep", "train": yaml.safe_load(TINY_MODEL), **yaml.safe_load(SWEEP), **fields},
        )


def test_a_bad_sweep_exits_2_naming_the_field(home, tmp_path):
    spec = write_spec(tmp_path, "kind: feature_sweep\npreset: smoke\nblocks: [mid, up9]\n")
    done = subprocess.run(
        wb_command("submit", spec, "--no-worker"), env=subprocess_env(home), capture_output=True, text=True
    )
    assert done.returncode == 2 and "up9" in done.stderr and "blocks" in done.stderr


def test_validation_images_are_set_aside_before_any_subset_is_drawn():
    """Catches: validation images that a k-shot subset (or k = all) also trains on, and a select_on: test
    sweep whose subsets moved (its earlier results would no longer rebuild)."""
    y = np.repeat(np.arange(5), [30, 25, 40, 22, 33])
    spec = resolve(
        feature_sweep.Spec,
        {"kind": "feature_sweep", "model_run": 1, "ks": [1, 4, "all"], "repeats": 3, "val_per_class": 6},
    )
    val, subsets = feature_sweep.labelled_subsets(y, spec)
    assert np.bincount(y[val]).tolist() == [6] * 5 and len(set(val)) == 30
    for k, sets in subsets.items():
        for idx in sets:
            assert not set(idx) & set(val)
            if k is not None:
                assert np.bincount(y[idx], minlength=5).tolist() == [k] * 5
    assert sorted(subsets[None][0]) == sorted(set(range(len(y))) - set(val))  # all: every image but val

    on_test = spec.model_copy(update={"select_on": "test"})
    val, subsets = feature_sweep.labelled_subsets(y, on_test)
    assert len(val) == 0
    for k in (1, 4):
        assert all((a == b).all() for a, b in zip(subsets[k], kshot_subsets(y, k, 3, 0), strict=True))
    with pytest.raises(ValueError, match="val_per_class = 22: class 3 has 22"):
        feature_sweep.labelled_subsets(y, spec.model_copy(update={"val_per_class": 22}))


class Recorder:
    """What summarise() writes, kept (the tables, the summary; pictures are drawn and dropped)."""

    def __init__(self):
        self.tables, self.summary_values = {}, {}

    def table(self, name, rows):
        self.tables[name] = rows

    def summary(self, **values):
        self.summary_values.update(values)

    def image(self, name, step, figure):
        pass


def test_the_setting_is_chosen_on_validation_and_fixed_settings_are_compared_paired():
    """Catches: a sweep that says val but chooses on test; a fixed setting compared unpaired or against
    the wrong repeats. t=10 is best on test, t=100 on validation; the per-repeat accuracies are given."""
    per_repeat = {
        ("diffusion", 10, "mid", "linear", 5): (0.90, 0.92, 0.94),
        ("diffusion", 100, "mid", "linear", 5): (0.80, 0.84, 0.85),
        ("pixels", None, "", "linear", 5): (0.70, 0.71, 0.78),
    }
    val = {10: 0.70, 100: 0.95, None: 0.60}
    rows = [
        {
            "source": source,
            "t": t,
            "block": block or None,
            "head": head,
            "k": k,
            "accuracy_mean": float(np.mean(acc)),
            "accuracy_ci_low": min(acc),
            "accuracy_ci_high": max(acc),
            "repeats": 3,
            "val_accuracy_mean": val[t],
        }
        for (source, t, block, head, k), acc in per_repeat.items()
    ]
    fields = {"model_run": 1, "timesteps": [10, 100], "blocks": ["mid"], "heads": ["linear"], "ks": [5]}
    picked = {}
    for select_on in ("val", "test"):
        spec = resolve(
            feature_sweep.Spec,
            {
                "kind": "feature_sweep",
                **fields,
                "baselines": ["pixels"],
                "select_on": select_on,
                "fixed": [{"t": 10, "block": "mid"}],
            },
        )
        ctx = Recorder()
        feature_sweep.summarise(ctx, spec, rows, per_repeat, labelled=False, validation_images=30)
        (selected,) = [c for c in ctx.tables["comparisons"] if c["setting"] == "selected"]
        (fixed,) = [c for c in ctx.tables["comparisons"] if c["setting"] == "fixed"]
        picked[select_on] = selected["t"]
        assert ctx.summary_values["selected_on"] == select_on == selected["selected_on"]
        # t=10 minus pixels, repeat by repeat: 0.20, 0.21, 0.16
        assert fixed["t"] == 10 and fixed["diffusion_minus_baseline"] == pytest.approx(0.19)
        # paired: sd of the differences 0.02646, t(2) = 4.3027, half width 4.3027 * 0.02646 / sqrt(3)
        assert (fixed["diffusion_minus_baseline_ci_low"], fixed["diffusion_minus_baseline_ci_high"]) == (
            pytest.approx(0.19 - 0.065724, abs=1e-5),
            pytest.approx(0.19 + 0.065724, abs=1e-5),
        )
        assert ctx.summary_values["fixed"][0]["diffusion_minus_baseline"] == pytest.approx(0.19)
    assert picked == {"val": 100, "test": 10}
    assert ctx.summary_values["diffusion_minus_pixels"] == pytest.approx(0.19)  # test: t=10 again

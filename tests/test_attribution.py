"""The attribution kind: DRAGON-schema shards, folders, the zoo and the trace benchmark as sources; the
patches recipe's views; validation held out by prompt; early stopping, resume; the results with their
intervals; `workbench attribute` and `workbench publish` (a folder, and a recording Hub endpoint)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import math
import subprocess
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from tests.conftest import ROOT, subprocess_env, wb_command, write_spec
from tests.test_ddpm_kind import run_spec
from tests.test_feature_sweep import finished_images_run
from tests.test_images import new_run
from workbench.jobs.classify import PretrainedUnavailable, build_attributor
from workbench.jobs.context import RunCancelled, RunContext
from workbench.jobs.data import attribution as A
from workbench.jobs.data.images import DataError
from workbench.jobs.jobfile import resolve
from workbench.jobs.kinds import attribution
from workbench.store import queries, queue

PIPES = ["nearest", "bilinear", "bicubic", "transposed_conv"]  # the smoke example's classes


def wilson(k: int, n: int, z: float = stats.norm.ppf(0.975)) -> tuple[float, float]:
    """The Wilson score interval, written out (the product asks scipy)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def digit_images(n: int, offset: int = 0) -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[offset : offset + n] * 16).clip(0, 255).astype(np.uint8)


def cli_json(home, *args) -> subprocess.CompletedProcess:
    return subprocess.run(wb_command(*args), env=subprocess_env(home), capture_output=True, text=True)


# --- the smoke example through the CLI, attribute and publish ---------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    home = tmp_path_factory.mktemp("attr") / "home"
    (run,) = run_spec(home, ROOT / "examples" / "attribution-smoke.yaml")
    return home, run


def test_the_smoke_example_reports_accuracy_with_intervals_per_class_and_confusion(smoke):
    """4 pipelines x 60 test images (the preset): every figure counted from the confusion matrix."""
    _, run = smoke
    assert run["status"] == "succeeded", run["error"]
    s, tables = run["summary"], run["tables"]
    conf = tables["confusion"]
    assert [r["classes"] for r in conf] == PIPES
    m = np.array([[r[c] for c in PIPES] for r in conf])
    assert m.sum(1).tolist() == [60] * 4  # every test image counted once, in its true class's row
    hits = int(np.trace(m))
    assert s["n_test"] == 240 and s["n_classes"] == 4 and s["top1_n"] == 240
    assert s["top1"] == pytest.approx(hits / 240)
    assert s["top1_ci"] == pytest.approx(wilson(hits, 240), abs=1e-9)
    assert s["top1"] >= 0.9, "four upsampling kernels at 32 px should be told apart"
    assert s["top5"] == 1.0  # four classes: the true one is always among the top five
    lo, hi = s["macro_f1_ci"]
    assert lo <= s["macro_f1"] <= hi and hi - lo > 0
    for row, counts in zip(tables["per_class"], m, strict=True):
        c = PIPES.index(row["class"])
        assert row["support"] == 60 and row["accuracy"] == pytest.approx(counts[c] / 60)
        assert (row["accuracy_ci_low"], row["accuracy_ci_high"]) == pytest.approx(wilson(counts[c], 60))
        assert row["predicted"] == int(m[:, c].sum())
    assert {"model.safetensors", "config.json", "confusion"} <= {a["name"] for a in run["artifacts"]}
    # the two recipes of the preset on the same 240 images: the headline is the better on validation,
    # the other's top-1 counted from its own confusion table, the paired difference against the first
    recipes = {r["recipe"]: r for r in tables["recipes"]}
    assert list(recipes) == ["spectrum-8", "patches-16-patch_cnn-bayar-w16"]
    head = max(recipes.values(), key=lambda r: (r["val_top1"], -r["val_loss"]))
    assert [r["recipe"] for r in recipes.values() if r["headline"]] == [head["recipe"]] == [s["recipe"]]
    for label, r in recipes.items():
        rows = conf if r is head else tables[f"confusion_{label}"]
        right = sum(row[row["classes"]] for row in rows)
        assert r["top1"] == pytest.approx(right / 240)
        if label != "spectrum-8":
            assert r["top1_vs_first"] == pytest.approx(r["top1"] - recipes["spectrum-8"]["top1"])
    assert recipes["spectrum-8"]["top1_vs_first"] is None  # no recipe minus itself, "0 [0, 0]"


def test_attribute_names_the_generator_and_a_published_folder_gives_the_same_answers(
    smoke, tmp_path, monkeypatch
):
    home, run = smoke
    fresh = digit_images(12, offset=1700)  # digits the model never saw, through two of its pipelines
    paths = []
    for pipe in ("nearest", "transposed_conv"):
        for i, img in enumerate(A.trace_images(fresh, pipe, 4, seed=99, strength=0.2)):
            paths.append(tmp_path / f"{pipe}-{i}.png")
            Image.fromarray(img).save(paths[-1])
    r = cli_json(home, "attribute", run["id"], *paths, "--json", "--top", "2")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert [g["image"] for g in got] == [str(p) for p in paths]
    assert all(len(g["top"]) == 2 and g["top"][0]["generator"] == g["generator"] for g in got)
    right = sum(g["generator"] == p.name.split("-")[0] for g, p in zip(got, paths, strict=True))
    assert right >= 22, f"{right} of 24 right"

    folder = tmp_path / "published"
    r = cli_json(home, "publish", run["id"], "--to-folder", folder)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "familiarity.safetensors",
        "model.safetensors",
    ]
    card = (folder / "README.md").read_text()
    s = run["summary"]
    assert f"{s['top1']:.4f}" in card and f"[{s['top1_ci'][0]:.4f}, {s['top1_ci'][1]:.4f}]" in card
    assert json.loads((folder / "config.json").read_text())["class_names"] == PIPES
    again = json.loads(cli_json(home, "attribute", folder, *paths, "--json", "--top", "2").stdout)
    assert again == got  # the folder holds the run's model

    # bad input: exit 2, named
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    from typer.testing import CliRunner

    from workbench.cli import app

    monkeypatch.setenv("WORKBENCH_HOME", str(home))  # in-process from here: a subprocess each costs seconds
    for args, words in (
        (("attribute", run["id"], tmp_path / "missing.png"), "no such image file"),
        (("attribute", 99, paths[0]), "99"),
        (("attribute", run["id"], not_image), "not a readable image"),
        (("attribute", tmp_path / "nowhere", paths[0]), "neither a run id nor a model folder"),
        (("publish", run["id"]), "--repo"),
        (("publish", run["id"], "--repo", "noslash"), "owner/name"),
    ):
        r = CliRunner().invoke(app, [str(a) for a in args])
        assert r.exit_code == 2 and words in r.stderr, (args, r.stderr)
    # one bad image among good ones refuses only itself: the others are answered, in order
    batch = [paths[0], not_image, tmp_path / "missing.png", paths[1]]
    r = CliRunner().invoke(app, ["attribute", str(run["id"]), *map(str, batch), "--json", "--top", "2"])
    mixed = json.loads(r.stdout)
    assert r.exit_code == 2 and [g["image"] for g in mixed] == list(map(str, batch))
    assert mixed[0] == got[0] and mixed[3] == got[1]
    assert "not a readable image" in mixed[1]["error"] and "no such image file" in mixed[2]["error"]
    assert "notes.png" in r.stderr and "missing.png" in r.stderr


class RecordingHub(BaseHTTPRequestHandler):
    """The four Hub API calls huggingface_hub makes to create a repo and commit small files."""

    seen: list[tuple[str, bytes]] = []
    existing: bool | None = None  # a repository already there: None (none), False (private), True (public)

    def _reply(self, obj, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.seen.append((self.path, body))
        port = self.server.server_address[1]
        if self.path == "/api/repos/create" and self.existing is not None:
            return self._reply({"error": "You already created this model repo"}, 409)
        if self.path == "/api/repos/create":
            return self._reply({"url": f"http://127.0.0.1:{port}/{json.loads(body)['organization']}/x"})
        if self.path == "/api/validate-yaml":
            return self._reply({"errors": [], "warnings": []})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._reply(
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                }
            )
        if "/commit/" in self.path:
            return self._reply(
                {"commitUrl": f"http://127.0.0.1:{port}/lab/x/commit/1", "commitOid": "1" * 40}
            )
        self.send_error(404)

    def do_GET(self):  # noqa: N802 - the repository's visibility, asked when it exists
        self.seen.append((self.path, b""))
        if self.path.startswith("/api/models/lab/x") and self.existing is not None:
            return self._reply({"id": "lab/x", "private": not self.existing, "sha": "1" * 40})
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    """A recording Hub endpoint; yields the environment variables that point huggingface_hub at it."""
    RecordingHub.seen, RecordingHub.existing = [], None
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}", "HF_TOKEN": "hf_t"}
    server.shutdown()


def created_private(body: dict) -> bool:
    """The create call's visibility (huggingface_hub sends `visibility`; releases before 1.0 `private`)."""
    return body["visibility"] == "private" if "visibility" in body else body["private"] is True


def committed_files() -> dict[str, bytes]:
    commits = [b for p, b in RecordingHub.seen if p == "/api/models/lab/x/commit/main"]
    assert len(commits) <= 1
    return {
        v["value"]["path"]: base64.b64decode(v["value"]["content"])
        for body in commits
        for v in map(json.loads, body.decode().splitlines())
        if v["key"] == "file"
    }


def test_publish_uploads_exactly_its_files_to_a_private_repository(smoke, tmp_path, hub):
    """The folder also holds a secret and an older card: --force replaces our four files there (weights,
    config, familiarity, card), leaves the secret alone, and the commit carries our files only, to a
    repository created private."""
    home, run = smoke
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / ".env").write_text("HF_TOKEN=secret")
    (folder / "README.md").write_text("my own notes")
    args = ("publish", run["id"], "--repo", "lab/x", "--to-folder", folder)
    r = subprocess.run(
        wb_command(*args, "--force"), env=subprocess_env(home, **hub), capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "(private)" in r.stdout
    create = json.loads(next(b for p, b in RecordingHub.seen if p == "/api/repos/create"))
    assert create["name"] == "x" and created_private(create)
    published = sorted(p.name for p in folder.iterdir() if p.name != ".env")
    assert published == ["README.md", "config.json", "familiarity.safetensors", "model.safetensors"]
    assert (folder / ".env").read_text() == "HF_TOKEN=secret"
    assert committed_files() == {n: (folder / n).read_bytes() for n in published}

    RecordingHub.seen = []
    r = subprocess.run(
        wb_command("publish", run["id"], "--repo", "lab/x", "--public"),
        env=subprocess_env(home, **hub),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert not created_private(json.loads(next(b for p, b in RecordingHub.seen if p == "/api/repos/create")))
    assert sorted(committed_files()) == published


def test_attribute_flags_images_unlike_the_training_set_that_the_softmax_labels_confidently(smoke, tmp_path):
    """Fresh digits through two of the model's pipelines are familiar (at most 2 of 24 flagged: each
    held-out image's chance is about 1 in 50 here); noise, flat grey squares and crops of the two photos
    scikit-learn ships are all flagged, although the softmax gives noise and grey squares its highest
    probabilities (a maximum-probability rule would trust them most). The run's summary counts its own
    flagged test images with an interval. Seen red with the held-out distances left unsorted."""
    from sklearn.datasets import load_sample_images

    home, run = smoke
    s = run["summary"]
    lo, hi = s["unfamiliar_test_ci"]
    assert s["unfamiliar_test_n"] == 240 and lo <= s["unfamiliar_test"] <= hi and hi < 0.15
    rng = np.random.default_rng(3)
    fresh = digit_images(12, offset=1740)
    familiar, odd = [], []
    for pipe in ("bilinear", "transposed_conv"):
        for i, img in enumerate(A.trace_images(fresh, pipe, 4, seed=98, strength=0.2)):
            familiar.append(tmp_path / f"{pipe}-{i}.png")
            Image.fromarray(img).save(familiar[-1])
    photos = load_sample_images().images
    for i in range(8):
        odd.append(tmp_path / f"noise-{i}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(odd[-1])
        odd.append(tmp_path / f"grey-{i}.png")
        Image.fromarray(np.full((32, 32), 30 * i, np.uint8)).save(odd[-1])
        photo = photos[i % 2]
        y, x = rng.integers(0, photo.shape[0] - 64), rng.integers(0, photo.shape[1] - 64)
        odd.append(tmp_path / f"photo-{i}.png")
        Image.fromarray(photo[y : y + 64, x : x + 64]).convert("L").resize((32, 32)).save(odd[-1])
    r = cli_json(home, "attribute", run["id"], *familiar, *odd, "--json")
    assert r.returncode == 0, r.stderr
    got = {Path(g["image"]).name: g for g in json.loads(r.stdout)}
    assert sum(got[p.name]["unfamiliar"] for p in familiar) <= 2
    assert all(got[p.name]["unfamiliar"] for p in odd), [p.name for p in odd if not got[p.name]["unfamiliar"]]
    assert all(0 <= g["familiar"] <= 1 for g in got.values())
    assert f"{sum(g['unfamiliar'] for g in got.values())} of 48 image(s) are further" in r.stderr
    noise = [got[p.name]["probability"] for p in odd if p.name.startswith(("noise", "grey"))]
    digits = [got[p.name]["probability"] for p in familiar]
    assert np.mean(noise) > np.mean(digits)  # why the softmax cannot be the judge


def test_publish_refuses_what_the_user_did_not_ask_for(smoke, tmp_path, hub, monkeypatch):
    """Exit 2 and nothing written or sent: a folder that holds files, a file for a folder, a public
    repository that exists when --public was not given. (In-process: a subprocess each costs seconds;
    huggingface_hub read HF_ENDPOINT when it was imported, so its constant is pointed at the recorder.)"""
    from huggingface_hub import constants
    from typer.testing import CliRunner

    from workbench.cli import app

    home, run = smoke
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("HF_TOKEN", hub["HF_TOKEN"])
    monkeypatch.setattr(constants, "ENDPOINT", hub["HF_ENDPOINT"])
    folder, a_file = tmp_path / "notes", tmp_path / "a.txt"
    folder.mkdir()
    (folder / "private-notes.txt").write_text("mine")
    a_file.write_text("mine")
    RecordingHub.existing = True

    def publish(*args):
        return CliRunner().invoke(app, ["publish", str(run["id"]), *map(str, args)])

    for args, words in (
        (("--to-folder", folder), "is not empty"),
        (("--to-folder", a_file), "is a file"),
        (("--to-folder", folder, "--repo", "lab/x"), "is not empty"),
        (("--repo", "lab/x"), "lab/x exists and is public: pass --public"),
    ):
        r = publish(*args)
        assert r.exit_code == 2 and words in r.stderr, (args, r.stderr)
    assert [p.name for p in folder.iterdir()] == ["private-notes.txt"] and a_file.read_text() == "mine"
    assert committed_files() == {}
    RecordingHub.seen, RecordingHub.existing = [], False  # an existing private repository is fine
    r = publish("--repo", "lab/x")
    assert r.exit_code == 0, r.stderr
    assert sorted(committed_files()) == [
        "README.md",
        "config.json",
        "familiarity.safetensors",
        "model.safetensors",
    ]


def test_publish_fails_clearly_offline(smoke):
    home, run = smoke
    env = subprocess_env(home, HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_t", HF_HUB_ETAG_TIMEOUT="1")
    r = subprocess.run(
        wb_command("publish", run["id"], "--repo", "lab/x"), env=env, capture_output=True, text=True
    )
    assert r.returncode == 1 and "cannot publish" in r.stderr and "--to-folder" in r.stderr


# --- sources ------------------------------------------------------------------------------------------


def write_shard(path, samples: list[tuple[np.ndarray, str, str]]) -> None:
    """A DRAGON-schema WebDataset shard: png, model.txt, json (prompt, model), prompt.cls."""

    def add(tar, name, data: bytes):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        for i, (img, model, prompt) in enumerate(samples):
            key = f"{path.stem}_{i:05d}"
            add(tar, f"{key}.png", A.png_bytes(img))
            add(tar, f"{key}.model.txt", model.encode())
            add(tar, f"{key}.json", json.dumps({"prompt": prompt, "model": model}).encode())
            add(tar, f"{key}.prompt.cls", str(abs(hash(prompt)) % 100).encode())


GENERATORS = {"SDXL": "bicubic", "Flux_1": "nearest", "SD_1.5": "transposed_conv"}  # DRAGON names


def dragon_shards(folder, per_generator: dict[str, int], offset: int) -> list:
    """Shards of images that differ only in their generator's traces; prompts shared across generators."""
    samples = []
    for k, (name, pipe) in enumerate(GENERATORS.items()):
        n = per_generator[name]
        base = digit_images(n, offset + 100 * k)
        for j, img in enumerate(A.trace_images(base, pipe, 4, seed=k)):
            samples.append((img, name, f"a photo of the digit {j % 10}"))
    paths = []
    for i in range(2):  # two shards per split, the samples dealt across them
        paths.append(folder / f"shard_{offset}_{i}.tar")
        write_shard(paths[-1], samples[i::2])
    return paths


def run_in_process(store, fields: dict, spy=None) -> dict:
    spec = resolve(attribution.Spec, {"kind": "attribution", **fields})
    rid = new_run(store, spec)
    ctx = RunContext(store, rid)
    attribution.run(ctx, spec)
    ctx.close()
    queue.finish(store, rid, "w", "succeeded")
    return {**queries.show(store, rid).as_json(), "events": [e.message for e in queries.events(store, rid)]}


FAST = {"train": {"steps": 30, "batch_size": 16, "eval_every": 15, "lr": 3e-3, "warmup_steps": 3}}
SMALL_PATCHES = [{"name": "patches", "patch_size": 16, "width": 8, "test_patches": 4}]


def test_dragon_schema_shards_train_with_validation_held_out_by_prompt(store, tmp_path, monkeypatch):
    train = dragon_shards(tmp_path, {"SDXL": 30, "Flux_1": 30, "SD_1.5": 30}, offset=0)
    test = dragon_shards(tmp_path, {"SDXL": 7, "Flux_1": 9, "SD_1.5": 11}, offset=1000)
    seen = {}
    real_train = attribution.train_recipe

    def spy(ctx, spec, recipe, view, train_rows, y_train, val_rows, y_val, k):
        seen.update(train=list(train_rows["prompt"]), val=list(val_rows["prompt"]), y=[*y_train, *y_val])
        return real_train(ctx, spec, recipe, view, train_rows, y_train, val_rows, y_val, k)

    monkeypatch.setattr(attribution, "train_recipe", spy)
    fields = {
        "data": {
            "source": "shards",
            "train": [str(p) for p in train],
            "test": [str(p) for p in test],
            "train_per_class": 25,
        },
        "recipes": SMALL_PATCHES,
        "val_fraction": 0.2,
        **FAST,
    }
    run = run_in_process(store, fields)
    assert run["status"] == "succeeded"
    support = {r["class"]: r["support"] for r in run["tables"]["per_class"]}
    assert support == {"Flux_1": 9, "SDXL": 7, "SD_1.5": 11}  # sorted names; every test image counted
    assert run["summary"]["n_test"] == 27
    # at most 25 of each generator kept; 2 of the 10 prompts (0.2) held out, wholly
    assert len(seen["train"]) + len(seen["val"]) == 75
    assert not set(seen["train"]) & set(seen["val"]) and len(set(seen["val"])) == 2
    assert np.bincount(seen["y"]).tolist() == [25, 25, 25]
    # only some generators, in the order given
    fields["classes"] = ["SD_1.5", "SDXL"]
    run = run_in_process(store, fields)
    assert [r["classes"] for r in run["tables"]["confusion"]] == ["SD_1.5", "SDXL"]
    assert run["summary"]["n_test"] == 18


def test_webdataset_rows_refuse_samples_without_a_generator():
    rows = [{"__key__": "a", "__url__": "s.tar", "png": b"", "json": {"prompt": "p"}}]
    with pytest.raises(DataError, match="names no generator"):
        list(A.webdataset_rows(rows, None, None))
    rows = [{"__key__": k, "png": b"", "model.txt": g} for k, g in enumerate("aabab")]
    assert [r["generator"] for r in A.webdataset_rows(rows, 2, None)] == ["a", "a", "b", "b"]


def test_dragon_offline_fails_naming_the_config(home, tmp_path):
    spec = write_spec(tmp_path, "kind: attribution\ndata: {source: dragon, config: Small}\n")
    env = subprocess_env(home, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    subprocess.run(wb_command("submit", spec, "--no-worker"), env=env, check=True, capture_output=True)
    subprocess.run(
        wb_command("worker", "--devices", "cpu", "--once"), env=env, capture_output=True, timeout=300
    )
    shown = json.loads(
        subprocess.run(wb_command("show", 1, "--json"), env=env, capture_output=True, text=True).stdout
    )
    assert shown["status"] == "failed"
    assert "DRAGON config 'Small'" in shown["error"] and "offline" in shown["error"]


def test_an_image_folder_splits_by_generator_folder(store, tmp_path):
    for k, pipe in enumerate(("nearest", "bicubic")):
        (tmp_path / "gens" / pipe).mkdir(parents=True)
        for i, img in enumerate(A.trace_images(digit_images(20, 50 * k), pipe, 4, seed=k)):
            Image.fromarray(img).save(tmp_path / "gens" / pipe / f"{i}.png")
    fields = {"data": {"source": "imagefolder", "path": str(tmp_path / "gens"), "test_fraction": 0.25}}
    run = run_in_process(store, {**fields, "recipes": SMALL_PATCHES, **FAST})
    assert {r["class"]: r["support"] for r in run["tables"]["per_class"]} == {"bicubic": 5, "nearest": 5}


def test_files_whose_size_or_format_names_the_generator_are_warned_of_and_can_be_normalised(store, tmp_path):
    """One generator's files are 36-px JPEGs, the other's 32-px PNGs: the size alone names every image's
    generator, the run says so (events, summary, files table); data.normalise re-encodes both as 32-px
    PNGs and the warning goes (the traits then name no more than the commonest class)."""
    for k, (pipe, size, suffix) in enumerate((("nearest", 36, "jpg"), ("bicubic", 32, "png"))):
        (tmp_path / "gens" / pipe).mkdir(parents=True)
        for i, img in enumerate(A.trace_images(digit_images(16, 40 * k), pipe, 4, seed=k)):
            Image.fromarray(img).resize((size, size)).save(tmp_path / "gens" / pipe / f"{i}.{suffix}")
    data = {"source": "imagefolder", "path": str(tmp_path / "gens"), "test_fraction": 0.25}
    run = run_in_process(store, {"data": data, "recipes": SMALL_PATCHES, **FAST})
    assert run["summary"]["size_by_class"] == 1.0
    assert any(e.startswith("warning: the files' size, format and mode") for e in run["events"])
    files = {r["class"]: r for r in run["tables"]["files"]}
    assert (
        files["nearest"]["commonest"] == "36x36 JPEG RGB" and files["bicubic"]["commonest"] == "32x32 PNG RGB"
    )

    fixed = {**data, "normalise": {"format": "png", "size": 32}}
    run = run_in_process(store, {"data": fixed, "recipes": SMALL_PATCHES, **FAST})
    assert run["summary"]["size_by_class"] == 0.5  # 12 training images each: the commonest class's share
    assert not any(e.startswith("warning") for e in run["events"])
    assert {r["commonest"] for r in run["tables"]["files"]} == {"32x32 PNG RGB"}


def test_a_zoo_of_image_runs_is_one_class_per_member_and_cached(store, monkeypatch):
    from tests.test_augmentation import spy_sampling_seeds
    from workbench.jobs.diffusion import synthetic

    a = finished_images_run(store, conditional=True)
    b = finished_images_run(store, conditional=False)
    fields = {
        "data": {
            "source": "zoo",
            # run a twice: DRAGON-like members differ in sampler, steps and guidance, not only weights
            # b by name: the newest succeeded run of experiment "t" (finished_images_run's)
            "runs": [
                a,
                {"experiment": "t"},
                {"run": a, "sampler": {"name": "ddpm", "steps": 3}, "guidance_scale": 0},
            ],
            "train_per_class": 40,
            "test_per_class": 10,
            "sampler": {"name": "ddim", "steps": 4},
        },
        "recipes": [{"name": "patches", "patch_size": 8, "width": 8, "test_patches": 1}],
        **FAST,
    }
    seeds = spy_sampling_seeds(monkeypatch, synthetic)
    run = run_in_process(store, fields)
    assert len(seeds) == 6 and all(keyed == drawn for keyed, drawn in seeds)
    names = [f"run{a} ddim-4 g2", f"run{b}", f"run{a} ddpm-3 g0"]
    assert [r["classes"] for r in run["tables"]["confusion"]] == names
    assert {r["support"] for r in run["tables"]["per_class"]} == {10}
    assert sum("zoo: drew" in e for e in run["events"]) == 6  # train and test draws of each member
    again = run_in_process(store, fields)
    assert not any("zoo: drew" in e for e in again["events"])  # read from the cache
    assert again["summary"]["top1"] == run["summary"]["top1"]

    guided = {
        **fields,
        "data": {**fields["data"], "runs": [a, {"run": {"experiment": "t"}, "guidance_scale": 3}]},
    }
    with pytest.raises(ValueError, match="run t is unconditional"):
        run_in_process(store, guided)


def test_zoo_class_names_stay_apart():
    from workbench.jobs.diffusion.config import SamplerSpec

    ddim = SamplerSpec(name="ddim", steps=50)
    M = attribution.ZooMember
    members = [M(run=1, sampler=ddim, guidance_scale=1), M(run=2, sampler=ddim, guidance_scale=1)]
    assert attribution.zoo_names(members, {1: "base", 2: "wide"}) == ["base", "wide"]
    assert attribution.zoo_names(members, {1: "same", 2: "same"}) == ["run1", "run2"]
    assert attribution.zoo_names(members, {1: None, 2: "wide"}) == ["run1", "wide"]
    named = [M(run=1, sampler=ddim, guidance_scale=1, name="wide"), members[1]]
    with pytest.raises(ValueError, match="share the class name 'wide'"):
        attribution.zoo_names(named, {1: "base", 2: "wide"})


# --- training ------------------------------------------------------------------------------------------


def tiny_training(store):
    spec = resolve(attribution.Spec, {"kind": "attribution", "recipes": SMALL_PATCHES, **FAST})
    data = attribution.trace_rows(spec, spec.data)
    names = list(spec.data.pipelines)
    y = attribution.labels_of(data["train"], names, "training")
    tr, va = A.split_by_prompt(list(data["train"]["prompt"]), 0.1, 0)
    recipe = spec.recipes[0]
    view = A.View("patches", 16, 4)
    args = (spec, recipe, view, data["train"].select(tr), y[tr], data["train"].select(va), y[va], len(names))
    return spec, args


def test_training_resumes_to_the_same_model(store):
    spec, args = tiny_training(store)
    whole, fit = attribution.train_recipe(RunContext(store, new_run(store, spec)), *args)

    rid = new_run(store, spec)
    ctx = RunContext(store, rid)
    calls = iter(range(10_000))
    ctx.should_stop = lambda: next(calls) >= 20  # honoured at step 21, between validations
    with pytest.raises(RunCancelled):
        attribution.train_recipe(ctx, *args)
    queue.finish(store, rid, "w", "cancelled")
    queue.retry(store, rid)
    assert queue.claim(store, "w", "cpu").attempt == 2
    resumed, fit2 = attribution.train_recipe(RunContext(store, rid, attempt=2), *args)
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed training differs from uninterrupted training"
    assert fit == fit2


def test_the_spectrum_recipe_is_a_logistic_regression_on_mean_log_dct_spectra(store):
    """Its logits are scikit-learn's on each image's mean log |DCT| over the grid of 8-px crops of its
    grey levels (scipy's DCT here, a matrix product in the model), standardised, at the chosen C."""
    from scipy.fft import dctn
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    data_spec = {"source": "traces", "base": "digits", "pipelines": PIPES, "strength": 0.3}
    spec = resolve(
        attribution.Spec,
        {
            "kind": "attribution",
            "data": {**data_spec, "train_per_class": 60, "test_per_class": 30},
            "recipes": [{"name": "spectrum", "patch_size": 8, "test_patches": 16}],
        },
    )
    (recipe,) = spec.recipes
    assert recipe.backbone == "spectrum" and recipe.label == "spectrum-8"
    data = attribution.trace_rows(spec, spec.data)
    y = attribution.labels_of(data["train"], PIPES, "training")
    y_test = attribution.labels_of(data["test"], PIPES, "test")
    tr, va = A.split_by_prompt(list(data["train"]["prompt"]), 0.1, 0)
    ctx = RunContext(store, new_run(store, spec))
    train, val = data["train"].select(tr), data["train"].select(va)
    net, fit = attribution.train_recipe(ctx, spec, recipe, recipe.view, train, y[tr], val, y[va], 4)
    logits = attribution.predict(net, data["test"], y_test, recipe.view, "cpu")

    def spectra(rows) -> np.ndarray:  # 32-px images: crops at 0, 8, 16, 24 in each direction
        out = []
        for img in rows["image"]:
            grey = np.asarray(img, np.float64).mean(-1)
            crops = [grey[t : t + 8, s : s + 8] for t in range(0, 32, 8) for s in range(0, 32, 8)]
            out.append(np.mean([np.log(np.abs(dctn(c, norm="ortho")) + 0.01).ravel() for c in crops], 0))
        return np.array(out)

    scaler = StandardScaler().fit(spectra(train))
    clf = LogisticRegression(C=fit["C"], max_iter=5000).fit(scaler.transform(spectra(train)), y[tr])
    expected = clf.predict_proba(scaler.transform(spectra(data["test"])))
    got = torch.from_numpy(logits).softmax(1).numpy()
    # float32 in the model, float64 here: a log near the floor moves a little (a wrong fold: 0.9998)
    assert np.abs(got - expected).max() < 0.05 and (got.argmax(1) == expected.argmax(1)).all()
    assert fit["val_top1"] > 0.5 and (got.argmax(1) == y_test).mean() > 0.5  # it learnt the traces
    # bf16 autocast (as on CUDA) leaves the spectrum in float32: a log of bf16 bins would move
    views = A.test_views(A.decode(data["test"][0]["image"]), recipe.view)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(net.features(views), net.features(views.double().float()))
        assert net.features(views).dtype == torch.float32


def test_early_stopping_keeps_the_best_validation_weights(store):
    spec, args = tiny_training(store)
    spec = spec.model_copy(
        update={"train": spec.train.model_copy(update={"steps": 400, "eval_every": 10, "patience": 2})}
    )
    rid = new_run(store, spec)
    net, fit = attribution.train_recipe(RunContext(store, rid), spec, *args[1:])
    curve = queries.metric_series(store, rid, "val_top1")
    assert fit["stopped_early"] and fit["steps"] < 400
    assert fit["steps"] - fit["best_step"] == 2 * 10  # two validations without a better top-1
    assert [s for s, _ in curve] == list(range(10, fit["steps"] + 1, 10))
    assert fit["val_top1"] == max(v for _, v in curve)
    # interrupted after it had stopped early (a kill before the run was marked done): nothing more to train
    queue.finish(store, rid, "w", "cancelled")
    queue.retry(store, rid)
    assert queue.claim(store, "w", "cpu").attempt == 2
    again, fit2 = attribution.train_recipe(RunContext(store, rid, attempt=2), spec, *args[1:])
    assert fit2 == fit and all(
        torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True)
    )
    # the returned weights are the best step's: validating them gives its top-1
    _, _, _, _, _, val_rows, y_val, _ = args
    logits = attribution.predict(net, val_rows, y_val, args[2], "cpu")
    assert float((logits.argmax(1) == y_val).mean()) == pytest.approx(fit["val_top1"])


# --- views, splits, backbones ----------------------------------------------------------------------------


def test_patches_are_native_pixels_and_the_test_grid_covers_the_image():
    x = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    view = A.View("patches", 16, 9)
    crops = A.test_views(x, view)
    assert crops.shape == (9, 3, 16, 16)
    norm = A._normalise(x)
    assert torch.equal(crops[0], norm[:, :16, :16]) and torch.equal(crops[-1], norm[:, -16:, -16:])
    g = torch.Generator().manual_seed(5)
    patch = A.train_view(x, view, A.Augment(flips=False), g)
    windows = norm.unfold(1, 16, 1).unfold(2, 16, 1)  # every 16 x 16 window of the image
    assert any(
        torch.equal(windows[:, i, j], patch) for i in range(windows.shape[1]) for j in range(windows.shape[2])
    ), "a training patch is a crop of the image, not resampled"
    same = A.train_view(x, view, A.Augment(jpeg=1.0, blur=1.0), torch.Generator().manual_seed(5))
    again = A.train_view(x, view, A.Augment(jpeg=1.0, blur=1.0), torch.Generator().manual_seed(5))
    assert torch.equal(same, again) and not torch.equal(same, patch)
    resized = A.test_views(x, A.View("resize224", 224))
    assert resized.shape == (1, 3, 224, 224)


def _nearest_neighbour_on_pixels(strength: float):
    """1-NN on raw pixels from the training images to the test images of the 8-pipeline benchmark."""
    from sklearn.neighbors import KNeighborsClassifier

    from workbench.jobs.metrics.stats import share_ci

    spec = attribution.Spec.model_validate(
        {
            "data": {
                "source": "traces",
                "base": "digits",
                "pipelines": list(attribution.PIPELINES),
                "strength": strength,
                "train_per_class": 100,
                "test_per_class": 36,
            }
        }
    )
    data = attribution.trace_rows(spec, spec.data)

    def pixels(rows):
        x = np.stack([np.asarray(im, np.float32).ravel() for im in rows["image"]])
        return x, np.array([attribution.PIPELINES.index(g) for g in rows["generator"]])

    (x_train, y_train), (x_test, y_test) = pixels(data["train"]), pixels(data["test"])
    hits = int((KNeighborsClassifier(1).fit(x_train, y_train).predict(x_test) == y_test).sum())
    return share_ci(hits, len(y_test))


def test_the_trace_benchmark_shares_no_draw_between_training_and_test(monkeypatch):
    """The faint benchmark leaks nothing a nearest neighbour on pixels can use (its interval below 2/K,
    chance 1/K); with the content blanked out, so that only the per-image draws (noise, tint) and the
    traces are left, still chance, and all but perfect once the test split is given the training seed:
    the split seeds are what keeps test images apart."""
    from workbench.jobs.data import images

    chance = 1 / len(attribution.PIPELINES)
    honest = _nearest_neighbour_on_pixels(0.1)
    assert honest.high < 2 * chance and honest.low < chance, honest

    real = images.load_images

    def blank(*args, **kwargs):
        base = real(*args, **kwargs)
        base.x_train.fill_(-1)
        base.x_test.fill_(-1)
        return base

    monkeypatch.setattr(images, "load_images", blank)
    assert _nearest_neighbour_on_pixels(0.1).high < 2 * chance
    monkeypatch.setitem(attribution.SPLIT_SEEDS, "test", attribution.SPLIT_SEEDS["train"])
    assert _nearest_neighbour_on_pixels(0.1).low > 0.9


@pytest.mark.parametrize("front", ["srm", "bayar"])
def test_a_high_pass_front_end_passes_no_content_of_a_flat_image_and_keeps_its_constraint(front):
    """The residual of a flat colour image is zero (every kernel's taps sum to 0; SRM's second-order
    kernels zero a linear ramp too), and Bayar's kernels stay constrained (centre -1, the rest summing
    to 1) after the optimiser moves them."""
    from workbench.jobs.classify import HighPass

    layer = HighPass(front)
    flat = torch.full((2, 3, 20, 20), 0.7)
    ramp = torch.linspace(0, 1, 20).expand(2, 3, 20, 20).clone()
    for image in (flat, ramp) if front == "srm" else (flat,):
        conv = torch.nn.functional.conv2d(
            image, layer.kernel if front == "srm" else layer.constrained(), groups=3
        )
        assert conv.abs().max() < 1e-5
    if front == "bayar":
        loss = layer(torch.randn(2, 3, 20, 20)).pow(2).mean()
        loss.backward()
        torch.optim.SGD(layer.parameters(), lr=10.0).step()
        k = layer.constrained()
        assert torch.allclose(k[:, 0, 2, 2], torch.tensor(-1.0))
        assert torch.allclose(k.sum((2, 3)), torch.zeros(18, 1), atol=1e-5)


def test_a_fainter_trace_is_the_same_image_with_less_of_the_pipeline_in_it():
    """strength 0.1 keeps a tenth of each pipeline's departure from the neutral upsampling: a few grey
    levels, counted here on the pixels."""
    base = digit_images(12)
    own = A.trace_images(base, "nearest", 4, [3, 0], 1.0).astype(float)
    faint = A.trace_images(base, "nearest", 4, [3, 0], 0.1).astype(float)
    neutral = A.trace_images(base, "nearest", 4, [3, 0], 1e-9).astype(float)
    full, tenth = np.abs(own - neutral).mean(), np.abs(faint - neutral).mean()
    assert full > 10 and 0.05 < tenth / full < 0.15  # rounding to whole levels blurs the tenth a little
    assert np.sqrt(((faint - neutral) ** 2).mean()) < 4  # a few grey levels
    with pytest.raises(ValueError, match="strength"):
        A.trace_images(base, "nearest", 4, 0, 1.5)


def test_validation_is_held_out_by_prompt():
    prompts = [f"p{i % 20}" for i in range(200)]
    train, val = A.split_by_prompt(prompts, 0.1, seed=3)
    held = {prompts[i] for i in val}
    assert len(held) == 2 and not held & {prompts[i] for i in train}
    assert len(train) + len(val) == 200 and len(val) == 20
    assert A.split_by_prompt(prompts, 0.1, seed=4)[1].tolist() != val.tolist()
    one = A.split_by_prompt(["same"] * 50, 0.1, seed=0)  # no prompts: images held out one by one
    assert len(one[1]) == 5


def test_pretrained_backbones_load_a_state_dict_or_say_why_not(tmp_path, monkeypatch):
    from torchvision.models import resnet18

    src = resnet18(num_classes=1000)
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    net = build_attributor("resnet18", 5, pretrained=str(tmp_path / "r18.pth"))
    assert torch.equal(net.conv1.weight, src.conv1.weight) and net.fc.out_features == 5

    def offline(*args, **kwargs):
        import urllib.error

        raise urllib.error.URLError("no network")

    import torchvision.models._api

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(PretrainedUnavailable, match="not in the torch cache .*hub/checkpoints"):
        build_attributor("resnet50", 5, pretrained="imagenet")
    with pytest.raises(PretrainedUnavailable, match="is not a resnet50 state dict"):
        build_attributor("resnet50", 5, pretrained=str(tmp_path / "r18.pth"))


@pytest.mark.parametrize(
    "body, words",
    [
        ("data: {source: nowhere}", "data"),
        ("data: {source: shards, train: [missing/*.tar], test: [x.tar]}", "matches no file"),
        ("recipes: [{name: patches, pretrained: imagenet}]", "trained from scratch"),
        ("recipes: [{name: patches}, {name: patches}]", "the same"),
        ("augment: {jpeg_quality: [90, 10]}", "jpeg_quality"),
        ("data: {source: zoo, runs: [1, 1]}", "listed twice"),
        ("data: {source: zoo, runs: [1, {run: 1, guidance_scale: 2.0}]}", "listed twice"),
        ("data: {source: zoo, runs: [1, {run: 2, name: a}, {run: 3, name: a}]}", "same name"),
        ('data: {source: zoo, runs: [1, {run: 2, name: "\\e[31m"}]}', "name"),
        ("data: {source: traces, pipelines: [nearest, warp]}", "pipelines"),
        ("classes: [a, a]", "listed twice"),
        ("data: {source: dragon, config: Huge}", "config"),
    ],
)
def test_spec_errors_name_the_field(cli, tmp_path, body, words):
    code, _, err = cli("validate", write_spec(tmp_path, f"kind: attribution\n{body}\n"))
    assert code == 2 and words in err, err


def test_recipes_compare_paired_and_a_run_resumed_in_the_second_does_not_retrain_the_first(store):
    fields = {
        "recipes": [SMALL_PATCHES[0], {"name": "patches", "patch_size": 8, "width": 8, "test_patches": 4}],
        **FAST,
    }
    whole = run_in_process(store, fields)
    rows = whole["tables"]["recipes"]
    assert [r["recipe"] for r in rows] == ["patches-16-patch_cnn-w8", "patches-8-patch_cnn-w8"]
    first, second = rows
    assert first["top1_vs_first"] is None and second["top1_vs_first"] == pytest.approx(
        second["top1"] - first["top1"]
    )
    assert second["top1_vs_first_ci_low"] <= second["top1_vs_first"] <= second["top1_vs_first_ci_high"]
    head = max(rows, key=lambda r: (r["val_top1"], -r["val_loss"]))  # on validation, not on the test split
    assert [r["headline"] for r in rows].count(True) == 1 and whole["summary"]["recipe"] == head["recipe"]
    assert whole["summary"]["top1"] == head["top1"]

    spec = resolve(attribution.Spec, {"kind": "attribution", **fields})
    rid = new_run(store, spec)
    ctx = RunContext(store, rid)
    calls = iter(range(10_000))
    ctx.should_stop = lambda: next(calls) >= 45  # in the second recipe (30 steps each)
    with pytest.raises(RunCancelled):
        attribution.run(ctx, spec)
    queue.finish(store, rid, "w", "cancelled")
    queue.retry(store, rid)
    assert queue.claim(store, "w", "cpu").attempt == 2
    ctx = RunContext(store, rid, attempt=2)
    attribution.run(ctx, spec)
    ctx.close()
    events = [e.message for e in queries.events(store, rid)]
    assert any("patches-16-patch_cnn-w8: finished before" in e for e in events)
    assert any(e.startswith("patches-8-patch_cnn-w8: resumed from checkpoint at step") for e in events)
    assert queries.tables(store, rid)["recipes"] == rows  # the same numbers as the uninterrupted run


def png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (a few hundred bytes; decoding it would take gigabytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    idat = zlib.compress(b"\0" * (width + 1) * 4)  # a few rows; the rest is missing
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_attribute_bounds_what_it_reads_from_images_and_published_folders(smoke, tmp_path, monkeypatch):
    """Exit 2 with a message, never a traceback or gigabytes: huge images (by header, by file size), a
    published config.json that asks for an absurd width, an unknown backbone, or escapes in class names."""
    from typer.testing import CliRunner

    from workbench.cli import app

    home, run = smoke
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    folder = tmp_path / "published"
    assert CliRunner().invoke(app, ["publish", str(run["id"]), "--to-folder", str(folder)]).exit_code == 0
    good = tmp_path / "ok.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(good)
    bomb, big, huge_file = tmp_path / "bomb.png", tmp_path / "big.png", tmp_path / "huge.png"
    png_header_only(bomb, 30000, 30000)
    png_header_only(big, 12000, 12000)
    with open(huge_file, "wb") as f:
        f.truncate(65 << 20)  # sparse: 65 MiB that take no disk
    config = json.loads((folder / "config.json").read_text())

    def published(**changes) -> str:
        copy = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        copy.mkdir()
        (copy / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
        (copy / "config.json").write_text(json.dumps({**config, **changes}))
        return str(copy)

    for args, words in (
        ((run["id"], bomb), "bomb.png: too many pixels (Image size (900000000 pixels)"),
        ((run["id"], big), "big.png: 12000 x 12000 pixels; images are at most 25 megapixels"),
        ((run["id"], huge_file), "huge.png: 65 MiB; images are at most 64 MiB"),
        ((published(width=60000), good), "config.json: width: Input should be less than or equal to 512"),
        ((published(backbone="vit_h"), good), "config.json: backbone: Input should be"),
        ((published(class_names=["a", "b\x1b[31m"] + config["class_names"][2:]), good), "not printable"),
        ((published(class_names="abcd"), good), "config.json: class_names"),
    ):
        r = CliRunner().invoke(app, ["attribute", *map(str, args)])
        assert r.exit_code == 2 and words in r.stderr, (args, r.stderr, r.exception)
        assert "\x1b" not in r.stderr


def test_recipes_that_differ_only_in_width_or_steps_have_their_own_labels():
    R = attribution.RecipeSpec
    assert R(name="patches", patch_size=32).label == "patches-32-patch_cnn"
    assert R(name="patches", patch_size=32, width=16, front="bayar").label == "patches-32-patch_cnn-bayar-w16"
    assert R(name="patches", patch_size=32, steps=400).label == "patches-32-patch_cnn-400steps"


def test_a_familiarity_file_is_read_as_untrusted(tmp_path):
    """familiarity.safetensors comes with a published model from anyone: arrays that do not fit one
    another, a missing array, or a file that is not safetensors are refused by name, never used."""
    from safetensors.numpy import save_file

    from workbench.jobs.attributor import Familiarity, ModelFilesError

    rng = np.random.default_rng(0)
    train, labels = rng.normal(size=(200, 12)), np.repeat(np.arange(4), 50)
    good = Familiarity.fit(train, labels, rng.normal(size=(40, 12)))
    arrays = {k: v.numpy() for k, v in good.tensors().items()}
    save_file(arrays, tmp_path / "good.safetensors")
    back = Familiarity.read(tmp_path / "good.safetensors")
    assert np.allclose(back.distance(train[:5]), good.distance(train[:5]), rtol=1e-4)
    for name, broken in [
        ("precision", {**arrays, "precision": np.eye(3, dtype=np.float32)}),
        ("missing", {k: v for k, v in arrays.items() if k != "held_out"}),
        ("center", {**arrays, "center": np.zeros(5, np.float32)}),
    ]:
        save_file(broken, tmp_path / f"{name}.safetensors")
        with pytest.raises(ModelFilesError, match="familiarity"):
            Familiarity.read(tmp_path / f"{name}.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFilesError, match="familiarity"):
        Familiarity.read(tmp_path / "junk.safetensors")

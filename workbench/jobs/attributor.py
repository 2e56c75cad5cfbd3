"""A trained attribution model outside its run: load it (from a run's files or a published folder), say
which generator made each image, and publish it (a folder, or a Hugging Face Hub model repository).

A model is two files, in a run's artifacts and in a published folder alike: `model.safetensors` (the
weights) and `config.json` (backbone, recipe, view size, class names, the test results), and since
familiarity checks a third, `familiarity.safetensors` (what its features look like on images like its
training set: Familiarity); a published folder adds `README.md`, the model card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
FAMILIARITY = "familiarity.safetensors"
MAX_FAMILIARITY_BYTES = 64 << 20
FORMAT = "workbench-attribution/1"
# A published folder may come from anyone (the model card says to run it on folders from the Hub):
# everything read from it is bounded before it is used.
MAX_CONFIG_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 1 << 30  # a ResNet50 is about 100 MB
MAX_IMAGE_BYTES = 64 << 20
MAX_IMAGE_PIXELS = 25_000_000  # 5000 x 5000; generators' images are at most a few megapixels


class ModelFilesError(ValueError):
    """The files do not hold a workbench attribution model."""


class ImageRefused(ValueError):
    """An image that cannot be attributed: unreadable, or larger than the bounds above."""


class ModelConfig(BaseModel):
    """What `config.json` must say, bounded as the attribution kind's own spec bounds it."""

    model_config = ConfigDict(extra="allow")  # results, data, run: for the card, not for loading

    format: Literal["workbench-attribution/1"]
    backbone: Literal["patch_cnn", "resnet18", "resnet50", "spectrum"]
    recipe: Literal["patches", "resize224"]  # the view: native crops, or the whole image resized
    size: int = Field(ge=8, le=1024)
    test_patches: int = Field(1, ge=1, le=4096)
    width: int = Field(32, ge=4, le=512)
    front: Literal["none", "srm", "bayar"] = "none"
    class_names: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        min_length=2, max_length=10_000
    )

    @field_validator("class_names")
    @classmethod
    def _printable(cls, names: list[str]) -> list[str]:
        if bad := next((n for n in names if not n.isprintable()), None):
            raise ValueError(f"class name {bad!r} is not printable text")
        return names


def read_config(path: Path) -> dict:
    """config.json, checked against ModelConfig; ModelFilesError naming the first problem."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        raw = json.loads(data.decode("utf-8")) if len(data) <= MAX_CONFIG_BYTES else None
    except (OSError, ValueError) as e:
        raise ModelFilesError(f"{path}: not a readable model config ({e})") from None
    if raw is None:
        raise ModelFilesError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB; not a model config")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ModelFilesError(f"{path}: not a workbench attribution model (format {got!r})")
    try:
        return ModelConfig.model_validate(raw).model_dump()
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise ModelFilesError(
            f"{path}: {where}: {first['msg']}; not a config this workbench can load"
        ) from None


UNFAMILIAR_SHARE = 0.01  # an image further from the training set than 99 % of held-out images is flagged
FEATURE_DIMS = 64  # features are projected on their first principal components before the distance


def with_features(net):
    """`x -> (the net's logits, its penultimate features)` in one pass: the features are the input of its
    last linear layer (every backbone here ends in one), caught by a hook."""
    import torch

    head = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]

    def forward(x):
        caught = []
        hook = head.register_forward_pre_hook(lambda _m, args: caught.append(args[0]))
        try:
            logits = net(x)
        finally:
            hook.remove()
        return logits, caught[-1].flatten(1)

    return forward


@dataclass(frozen=True)
class Familiarity:
    """How far an image's features lie from what the model was trained on: the Mahalanobis distance to the
    nearest class mean (a shared covariance, Ledoit-Wolf shrunk, on the first FEATURE_DIMS principal
    components of training features; Lee et al. 2018), set against the same distance of held-out images
    (the validation split, never trained on). An image further than all but UNFAMILIAR_SHARE of them is
    one the label should not be trusted on: the softmax is confident far from the data."""

    center: np.ndarray  # (D,) the training features' mean
    components: np.ndarray  # (D, P)
    class_means: np.ndarray  # (K, P)
    precision: np.ndarray  # (P, P)
    held_out: np.ndarray  # (M,) sorted distances of held-out images

    @classmethod
    def fit(cls, train: np.ndarray, labels: np.ndarray, held_out: np.ndarray) -> Familiarity:
        from sklearn.covariance import LedoitWolf

        center = train.mean(0)
        dims = max(1, min(FEATURE_DIMS, train.shape[1], len(train) - 1))
        _, _, vt = np.linalg.svd(train - center, full_matrices=False)
        components = vt[:dims].T
        z = (train - center) @ components
        classes = np.unique(labels)
        class_means = np.stack([z[labels == c].mean(0) for c in classes])
        residual = z - class_means[np.searchsorted(classes, labels)]
        precision = np.linalg.pinv(LedoitWolf(assume_centered=True).fit(residual).covariance_)
        fitted = cls(center, components, class_means, precision, np.zeros(0))
        return cls(center, components, class_means, precision, np.sort(fitted.distance(held_out)))

    def distance(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.center) @ self.components
        d = z[:, None, :] - self.class_means[None]
        return np.sqrt(np.maximum(np.einsum("nkp,pq,nkq->nk", d, self.precision, d), 0)).min(1)

    def share_further(self, distances: np.ndarray) -> np.ndarray:
        """The share of held-out images at least as far as each distance (1: typical, ~0: unlike any)."""
        return 1.0 - np.searchsorted(self.held_out, distances, side="left") / max(len(self.held_out), 1)

    def tensors(self) -> dict:
        import torch

        return {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k), dtype=np.float32)) for k in FIELDS}

    @classmethod
    def read(cls, path: Path) -> Familiarity:
        """From a file as untrusted as any model file: bounded, safetensors only, shapes checked."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        if Path(path).stat().st_size > MAX_FAMILIARITY_BYTES:
            raise ModelFilesError(
                f"{path}: larger than {MAX_FAMILIARITY_BYTES >> 20} MiB; not a familiarity file"
            )
        try:
            t = load_file(str(path))
            f = cls(*(t[k].astype(np.float64) for k in FIELDS))
        except (OSError, KeyError, SafetensorError) as e:
            raise ModelFilesError(f"{path}: not a familiarity file ({str(e)[:200]})") from None
        d, p = f.components.shape if f.components.ndim == 2 else (0, 0)
        if not (
            f.center.shape == (d,)
            and f.class_means.ndim == 2
            and f.class_means.shape[1] == p
            and f.precision.shape == (p, p)
            and f.held_out.ndim == 1
            and len(f.held_out) > 0
        ):
            raise ModelFilesError(f"{path}: its arrays do not fit one another; not a familiarity file")
        return f


FIELDS = ("center", "components", "class_means", "precision", "held_out")


@dataclass
class Attribution:
    """One image's answer: its most probable generator and the `top` ones, or why it was refused."""

    image: str
    generator: str | None
    probability: float | None
    top: list[tuple[str, float]]  # the most probable generators, best first
    error: str | None = None  # the image was not attributed (unreadable, too large, missing)
    familiar: float | None = None  # share of held-out images at least as far from the training set

    @property
    def unfamiliar(self) -> bool:
        """Further from the training set than all but UNFAMILIAR_SHARE of held-out images."""
        return self.familiar is not None and self.familiar < UNFAMILIAR_SHARE

    def as_dict(self) -> dict:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {
            "image": self.image,
            "generator": self.generator,
            "probability": self.probability,
            "top": [{"generator": g, "probability": p} for g, p in self.top],
            "familiar": self.familiar,
            "unfamiliar": self.unfamiliar,
        }


class Attributor:
    def __init__(self, net, config: dict, device: str, familiarity: Familiarity | None = None):
        from workbench.jobs.data.attribution import View

        self.net, self.config, self.device, self.familiarity = net, config, device, familiarity
        self.class_names: list[str] = config["class_names"]
        self.view = View(config["recipe"], int(config["size"]), int(config["test_patches"]))

    @classmethod
    def load(
        cls, weights: Path, config: Path, device: str = "auto", familiarity: Path | None = None
    ) -> Attributor:
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from workbench.jobs.classify import build_attributor

        cfg = read_config(config)
        if Path(weights).stat().st_size > MAX_WEIGHTS_BYTES:
            raise ModelFilesError(
                f"{weights}: larger than {MAX_WEIGHTS_BYTES >> 30} GiB; not one of our models"
            )
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        net = build_attributor(
            cfg["backbone"], len(cfg["class_names"]), cfg["width"], front=cfg["front"], patch=cfg["size"]
        )
        try:
            net.load_state_dict(load_file(str(weights)))
        except (OSError, RuntimeError, SafetensorError) as e:
            raise ModelFilesError(f"{weights}: the weights do not fit the config ({str(e)[:300]})") from None
        known = Familiarity.read(familiarity) if familiarity is not None else None
        if known is not None and len(known.class_means) != len(cfg["class_names"]):
            raise ModelFilesError(
                f"{familiarity}: made for {len(known.class_means)} classes, the model has {len(cfg['class_names'])}"
            )
        return cls(net.to(device).eval(), cfg, device, known)

    @classmethod
    def from_folder(cls, folder: Path, device: str = "auto") -> Attributor:
        folder = Path(folder)
        for name in (WEIGHTS, CONFIG):
            if not (folder / name).is_file():
                raise ModelFilesError(f"{folder} has no {name}: not a published attribution model")
        familiarity = folder / FAMILIARITY if (folder / FAMILIARITY).is_file() else None
        return cls.load(folder / WEIGHTS, folder / CONFIG, device, familiarity)

    def attribute(self, paths: list[Path], top: int = 5, batch_size: int = 16) -> list[Attribution]:
        """The generator of each image, with the `top` most probable ones, in the order given; images in
        batches of batch_size, each classified as in the run's test (a grid of patches, or resized to
        224). An image that cannot be read, or is out of bounds, comes back with its `error`."""
        import torch

        from workbench.jobs.data.attribution import test_views
        from workbench.jobs.diffusion.train import autocast

        out: dict[int, Attribution] = {}
        for i in range(0, len(paths), batch_size):
            views, chunk = [], []
            for k, p in enumerate(paths[i : i + batch_size], i):  # a refused image refuses only itself
                try:
                    views.append(test_views(read_image(p), self.view))
                    chunk.append((k, p))
                except ImageRefused as e:
                    out[k] = Attribution(str(p), None, None, [], str(e))
            if not chunk:
                continue
            with torch.no_grad(), autocast(self.device):
                logits, features = with_features(self.net)(torch.cat(views).to(self.device))
                logits, features = logits.float(), features.float()
            counts = [len(v) for v in views]
            probs = torch.stack([part.mean(0) for part in logits.split(counts)]).softmax(1)
            familiar = [None] * len(chunk)
            if self.familiarity is not None:  # each image's mean over its views, as its logits
                mean = torch.stack([part.mean(0) for part in features.split(counts)]).cpu().double().numpy()
                familiar = self.familiarity.share_further(self.familiarity.distance(mean)).tolist()
            for (k, p), row, known in zip(chunk, probs.cpu(), familiar, strict=True):
                best = row.argsort(descending=True)[: min(top, len(row))].tolist()
                ranked = [(self.class_names[j], float(row[j])) for j in best]
                out[k] = Attribution(str(p), ranked[0][0], ranked[0][1], ranked, familiar=known)
        return [out[k] for k in range(len(paths))]


def read_image(path: Path):
    """The image at `path` as uint8 (3, H, W), decoded only once its file size and pixel count are known
    to be in bounds (a 420 KB PNG can hold 12000 x 12000 pixels: 3 GB and half a minute to decode).
    ImageRefused otherwise, or when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    from workbench.jobs.data.attribution import decode

    unreadable = (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, ValueError)
    try:
        size = Path(path).stat().st_size
    except OSError:
        raise ImageRefused(f"{path}: no such image file") from None
    if not Path(path).is_file():
        raise ImageRefused(f"{path}: not a file")
    if size > MAX_IMAGE_BYTES:
        raise ImageRefused(f"{path}: {size >> 20} MiB; images are at most {MAX_IMAGE_BYTES >> 20} MiB")
    try:
        img = Image.open(path)  # reads the header only
    except Image.DecompressionBombError as e:  # Pillow's own bound, far above ours
        raise ImageRefused(
            f"{path}: too many pixels ({e}); images are at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels"
        ) from None
    except unreadable as e:
        raise ImageRefused(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    with img:
        w, h = img.size
        if w * h > MAX_IMAGE_PIXELS:
            raise ImageRefused(
                f"{path}: {w} x {h} pixels; images are at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels"
            )
        try:
            return decode(img)
        except unreadable as e:
            raise ImageRefused(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


# --- publishing ------------------------------------------------------------------------------------


def model_card(config: dict, run_id: int, run_name: str) -> str:
    """A Hugging Face model card: metadata, what the model does, its test results with intervals."""
    r = config["results"]
    data = config.get("data", {})
    dragon = data.get("source") == "dragon"
    low, high = r["top1_ci"]
    tags = ["image-classification", "diffusion-model-attribution", "synthetic-image-detection", "workbench"]
    meta = ["---", "library_name: pytorch", "pipeline_tag: image-classification", "tags:"]
    meta += [f"  - {t}" for t in tags]
    if dragon:
        meta += ["datasets:", f"  - {data.get('repo', 'lesc-unifi/dragon')}", "license: cc-by-sa-4.0"]
    meta.append("---")
    classes = ", ".join(config["class_names"])
    view = (
        f"native-resolution {config['size']} x {config['size']} patches (a grid of up to "
        f"{config['test_patches']} per image at test time, logits averaged)"
        if config["recipe"] == "patches"
        else f"the whole image resized to {config['size']} x {config['size']}"
    )
    source = (
        f"DRAGON ({data.get('repo')}, config {data.get('config')})"
        if dragon
        else f"a {data.get('source')} source"
    )
    return "\n".join(
        meta
        + [
            "",
            f"# {run_name or 'attribution'}: which generator made this image",
            "",
            f"A {MODEL_WORDS.get(config['backbone'], config['backbone'])}"
            f"{FRONT_WORDS.get(config.get('front', 'none'), '')} over {len(config['class_names'])} image "
            "generators, trained by "
            f"workbench run {run_id} on {source}. It sees {view}.",
            "",
            f"Generators: {classes}.",
            "",
            "## Results on the held-out test split",
            "",
            "| metric | value | 95 % interval | test images |",
            "|---|---|---|---|",
            f"| top-1 accuracy | {r['top1']:.4f} | [{low:.4f}, {high:.4f}] (Wilson) | {r['n_test']} |",
            f"| top-5 accuracy | {r['top5']:.4f} | {_interval(r.get('top5_ci'))} (Wilson) | {r['n_test']} |",
            f"| macro-F1 | {r['macro_f1']:.4f} | {_interval(r.get('macro_f1_ci'))} (bootstrap) | {r['n_test']} |",
            "",
            "## Use",
            "",
            "```",
            "workbench attribute THIS_FOLDER image.png",
            "```",
            "",
            "`config.json` holds the recipe and the class order; `model.safetensors` the weights.",
            "",
        ]
    )


MODEL_WORDS = {
    "patch_cnn": "patch CNN classifier",
    "resnet18": "ResNet18 classifier",
    "resnet50": "ResNet50 classifier",
    "spectrum": "logistic regression on log-DCT spectra (the spectral baseline)",
}
FRONT_WORDS = {
    "srm": " behind fixed SRM high-pass filters",
    "bayar": " behind a constrained (Bayar) high-pass layer",
}


def _interval(ci) -> str:
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""


PUBLISHED = (WEIGHTS, CONFIG, FAMILIARITY, CARD)  # every file publishing writes, the only ones it uploads


def write_folder(
    folder: Path, weights: Path, config: dict, card: str, force: bool = False, familiarity: Path | None = None
) -> Path:
    """The published files in `folder` (created): the weights, config, card, and the familiarity file when
    the run made one (see place_files)."""
    files: dict[str, Path | str] = {WEIGHTS: weights, CONFIG: json.dumps(config, indent=2), CARD: card}
    if familiarity is not None:
        files[FAMILIARITY] = familiarity
    return place_files(folder, files, force, PUBLISHED)


def place_files(folder: Path, files: dict[str, Path | str], force: bool, ours: tuple[str, ...]) -> Path:
    """`files` (name -> a file to copy, or text) in `folder` (created). A folder that already holds anything
    is refused unless `force`, which replaces `ours` there and touches nothing else in it."""
    import shutil

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PublishRefused(f"--to-folder {folder} is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise PublishRefused(
            f"--to-folder {folder} is not empty: give an empty or new folder, or --force to replace "
            f"{', '.join(ours)} in it (nothing else there is touched)"
        )
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, folder / name)
        else:
            (folder / name).write_text(content)
    return folder


class PublishError(RuntimeError):
    """The model could not be published; the message says why."""


class PublishRefused(PublishError):
    """Publishing would do something the user did not ask for (exit 2, nothing uploaded)."""


def upload(
    folder: Path,
    repo: str,
    token: str | None = None,
    public: bool = False,
    files: tuple[str, ...] = PUBLISHED,
) -> str:
    """Commit the published `files` of `folder` (never anything else in it) to the model repository
    `repo`, created private unless `public`; returns the commit URL. An existing public repository is
    refused unless `public`: uploading there would make the model public. The Hub's address is
    huggingface_hub's (HF_ENDPOINT), the token HF_TOKEN's or the saved login's."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        try:
            api.create_repo(repo, repo_type="model", private=not public)
        except HfHubHTTPError as e:
            if e.response is None or e.response.status_code != 409:
                raise
            if not api.model_info(repo).private and not public:  # it exists already
                raise PublishRefused(
                    f"{repo} exists and is public: pass --public to publish into it"
                ) from None
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo,
            repo_type="model",
            allow_patterns=list(files),
            commit_message="workbench: publish model",
        )
    except PublishError:
        raise
    except HfHubHTTPError as e:
        raise PublishError(f"the Hub refused {repo}: {e}") from None
    except Exception as e:  # no network, no token
        raise PublishError(
            f"cannot publish to {api.endpoint}/{repo}: {type(e).__name__}: {e}. Offline? Write the files "
            "with --to-folder and upload them where the Hub is reachable"
        ) from None
    return str(info)

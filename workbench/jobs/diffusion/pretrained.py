"""Published models as a model source: `model: {pretrained: OWNER/NAME | folder, revision, subfolder}`.

A pixel-space diffusers `UNet2DModel` (unconditional, or class-conditional through `num_class_embeds`)
and the noise schedule of its scheduler config (betas, timesteps, prediction type: epsilon, sample or
v), read from a local folder or from the Hugging Face Hub through its cache. Everything in such a folder
is untrusted: configs are read as bounded JSON and only the keys understood here are used, weights are
read from safetensors (pickled `.bin` files only with `allow_pickle: true`), downloads are limited to
the files the model needs and to a size, and go to the Hub's cache (its own partial-file handling),
never into a run's folder. The commit a Hub revision resolved to, or a local file's digest, is recorded
in the run, so the model can be named exactly again.

The spec half (PretrainedModel, `inspect_folder`) imports pydantic only: submit checks a local folder
(or a Hub model already in the cache) against the data the spec names before anything is queued.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from workbench.jobs.data.names import CLASS_NAMES
from workbench.jobs.diffusion.config import DataSpec, Strict

if TYPE_CHECKING:
    import torch

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
SUBFOLDER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9_][A-Za-z0-9._-]{0,99}){0,3}$")
MAX_CONFIG_BYTES = 1 << 20
WEIGHTS = "diffusion_pytorch_model.safetensors"
PICKLED = "diffusion_pytorch_model.bin"
SCHEDULER_CONFIG = "scheduler_config.json"
NATIVE_CHANNELS = {"digits": 1, "mnist": 1, "fashion_mnist": 1, "cifar10": 3}
NATIVE_SIZE = {"digits": 8, "mnist": 28, "fashion_mnist": 28, "cifar10": 32}
# the schedule keys read from a scheduler config (any other key is ignored), with what each may be
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")


class ModelFolderError(ValueError):
    """The folder or repository does not hold a model this module can use; the message says why."""


class PretrainedModel(Strict):
    """A published diffusers UNet2DModel: where it is, which version, and the images it was made for."""

    pretrained: str = Field(
        min_length=1,
        max_length=1000,
        description="a Hugging Face Hub repository (OWNER/NAME) or a local folder (relative to the spec "
        "file) holding a diffusers UNet2DModel and its scheduler config",
    )
    revision: str | None = Field(
        None, description="Hub: a branch, tag or commit (default main); the commit it resolves to is recorded"
    )
    subfolder: str | None = Field(
        None, description="where the UNet's config.json and weights are (default: unet/ if there is one)"
    )
    allow_pickle: bool = Field(
        False,
        description="accept pickled weights (diffusion_pytorch_model.bin), which can run code when "
        "loaded, where there are no safetensors",
    )
    class_null: bool = Field(
        False,
        description="class-conditional models: its last class embedding is the unconditional (null) "
        "class, as workbench trains them (classifier-free guidance and features need one)",
    )
    data: DataSpec | None = Field(
        None,
        description="the images the model was made for ({name: cifar10} for google/ddpm-cifar10-32): the "
        "reference for FID, the images to probe, the names of its classes",
    )
    max_download_gb: float = Field(10.0, gt=0, le=1000, description="refuse a model whose files are larger")

    @field_validator("pretrained")
    @classmethod
    def _where(cls, value: str, info: ValidationInfo) -> str:
        """A folder (a path that exists, or one written as a path) is stored absolute; otherwise it must
        be a Hub repository id."""
        path = Path(value).expanduser()
        written_as_path = value.startswith(("/", "./", "../", "~")) or value in (".", "..")
        if not path.is_absolute():
            path = Path((info.context or {}).get("base_dir") or Path.cwd()) / path
        if path.is_dir():
            return str(path.resolve())
        if written_as_path or not HUB_ID.match(value):
            raise ValueError(
                f"{value!r} is neither a folder here ({path} does not exist) nor a Hugging Face Hub "
                "repository id OWNER/NAME"
            )
        return value

    @field_validator("revision")
    @classmethod
    def _revision(cls, value):
        if value is not None and (not REVISION.match(value) or ".." in value):
            raise ValueError(f"{value!r} is not a branch, tag or commit name")
        return value

    @field_validator("subfolder")
    @classmethod
    def _subfolder(cls, value):
        if value is not None and (not SUBFOLDER.match(value) or ".." in value.split("/")):
            raise ValueError(f"{value!r}: give a relative folder inside the model (letters, digits, . _ - /)")
        return value

    @model_validator(mode="after")
    def _matches(self):
        if self.local and self.revision is not None:
            raise ValueError("revision: only for Hub repositories; a local folder is used as it is")
        try:
            if (found := self.found()) is not None:
                check_data(found, self.data)
        except ModelFolderError as e:
            raise ValueError(str(e)) from None
        return self

    def found(self) -> ModelFolder | None:
        """What can be known before the run: the folder here, or the revision already in the Hub cache
        (None: on the Hub only). ModelFolderError when it holds no usable model."""
        folder = self.local or cached_snapshot(self.pretrained, self.revision)
        return None if folder is None else inspect_folder(folder, self)

    @property
    def local(self) -> Path | None:
        return Path(self.pretrained) if Path(self.pretrained).is_absolute() else None

    def __str__(self) -> str:
        where = self.pretrained + (f"@{self.revision}" if self.revision else "")
        return where + (f" ({self.subfolder})" if self.subfolder else "")


@dataclass(frozen=True)
class ModelFolder:
    """What a model folder holds, read as untrusted: the UNet's config and files, the schedule's config."""

    unet_dir: Path
    config: dict
    weights: Path
    scheduler: dict

    @property
    def image_shape(self) -> tuple[int, int, int]:
        size = self.config["sample_size"]
        side = size if isinstance(size, int) else size[0]
        return (self.config["in_channels"], side, side)

    @property
    def class_embeds(self) -> int:
        return self.config.get("num_class_embeds") or 0

    @property
    def levels(self) -> int:
        return len(self.config["block_out_channels"])

    @property
    def timesteps(self) -> int:
        return self.scheduler.get("num_train_timesteps", 1000)

    def classes(self, ref: PretrainedModel) -> int:
        """The classes it draws (its null class, where it has one, not counted)."""
        return max(0, self.class_embeds - (1 if ref.class_null else 0))


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ModelFolderError(f"{what}: {path.name} is missing")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelFolderError(f"{what}: {path.name} is {path.stat().st_size} bytes; a config is under 1 MB")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"{what}: {path.name} is not JSON ({e})") from None
    if not isinstance(value, dict):
        raise ModelFolderError(f"{what}: {path.name} is not a JSON object")
    return value


def _int_list(value, what: str, low: int, high: int, most: int) -> None:
    if not (isinstance(value, list) and 1 <= len(value) <= most):
        raise ModelFolderError(f"{what}: expected a list of 1 to {most} integers")
    if not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in value):
        raise ModelFolderError(f"{what}: each must be an integer from {low} to {high}")


def inspect_folder(folder: Path, ref: PretrainedModel, field: str = "model") -> ModelFolder:
    """The UNet and schedule a (downloaded or local) model folder holds, checked as far as a config can be
    without building anything: ModelFolderError, naming the field, otherwise."""
    folder = Path(folder)
    where = f"{field}.pretrained {ref.pretrained}"
    if ref.subfolder:
        unet_dir = folder / ref.subfolder
        if not unet_dir.is_dir():
            raise ModelFolderError(f"{field}.subfolder: {where} has no folder {ref.subfolder!r}")
    else:
        unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    for d in (folder, unet_dir):  # a link could lead anywhere: the model is what the folder itself holds
        if d.is_symlink():
            raise ModelFolderError(f"{where}: {d.name} is a link")
    config = read_json(unet_dir / "config.json", where)
    cls = config.get("_class_name")
    if cls != "UNet2DModel":
        raise ModelFolderError(
            f"{where}: its config.json describes a {cls if isinstance(cls, str) else 'non-diffusers'} "
            "model, not a diffusers UNet2DModel (pixel-space denoisers only; latent and text-conditioned "
            "models are not supported)" + ("" if ref.subfolder else f"; name its UNet with {field}.subfolder")
        )
    check_unet_config(config, where)
    weights = unet_dir / WEIGHTS
    if not weights.is_file():
        if not (unet_dir / PICKLED).is_file():
            raise ModelFolderError(f"{where}: no {WEIGHTS} (nor {PICKLED}) next to its config.json")
        if not ref.allow_pickle:
            raise ModelFolderError(
                f"{field}.allow_pickle: {where} has only pickled weights ({PICKLED}), which can run code "
                "when loaded; set allow_pickle: true if you trust it, or convert it to safetensors"
            )
        weights = unet_dir / PICKLED
    for place in (folder / "scheduler", unet_dir, folder):
        if (place / SCHEDULER_CONFIG).is_file():
            scheduler = read_json(place / SCHEDULER_CONFIG, where)
            break
    else:
        raise ModelFolderError(
            f"{where}: no {SCHEDULER_CONFIG} (in scheduler/, beside the UNet or at the top): the noise "
            "schedule it was trained with is unknown"
        )
    schedule_settings(scheduler, where)
    return ModelFolder(unet_dir, config, weights, scheduler)


def check_unet_config(config: dict, where: str) -> None:
    """Bounds on what building the UNet would allocate, and the shapes this workbench can use."""
    size = config.get("sample_size")
    if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not (isinstance(size, int) and 4 <= size <= 1024):
        raise ModelFolderError(f"{where}: sample_size {size!r}: square images of 4 to 1024 pixels only")
    _int_list([config.get("in_channels")], f"{where}: in_channels", 1, 4, 1)
    if config.get("out_channels") != config.get("in_channels"):
        raise ModelFolderError(
            f"{where}: out_channels {config.get('out_channels')!r} is not in_channels "
            f"{config.get('in_channels')!r} (a model that also predicts its variance is not supported)"
        )
    _int_list(config.get("block_out_channels"), f"{where}: block_out_channels", 1, 4096, 8)
    layers = config.get("layers_per_block", 2)
    _int_list([layers], f"{where}: layers_per_block", 1, 8, 1)
    if config.get("class_embed_type") is not None:
        raise ModelFolderError(
            f"{where}: class_embed_type {config.get('class_embed_type')!r}: only a plain class embedding "
            "(num_class_embeds) is supported"
        )
    n = config.get("num_class_embeds")
    if n is not None:
        _int_list([n], f"{where}: num_class_embeds", 1, 100_000, 1)


def schedule_settings(config: dict, where: str) -> dict:
    """The keys of a scheduler config that define the training schedule, checked; the rest is ignored."""
    out: dict[str, Any] = {}
    T = config.get("num_train_timesteps", 1000)
    _int_list([T], f"{where}: num_train_timesteps", 2, 10_000, 1)
    out["num_train_timesteps"] = T
    for key, default in (("beta_start", 1e-4), ("beta_end", 0.02), ("clip_sample_range", 1.0)):
        v = config.get(key, default)
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e3):
            raise ModelFolderError(f"{where}: scheduler {key} {v!r} is not a positive number")
        out[key] = float(v)
    for key, allowed, default in (
        ("prediction_type", PREDICTION_TYPES, "epsilon"),
        ("beta_schedule", BETA_SCHEDULES, "linear"),
        ("variance_type", VARIANCE_TYPES, "fixed_small"),
    ):
        v = config.get(key, default)
        if v not in allowed:
            raise ModelFolderError(
                f"{where}: scheduler {key} {v!r} is not supported (one of {', '.join(allowed)})"
            )
        out[key] = v
    for key in ("clip_sample", "rescale_betas_zero_snr"):
        v = config.get(key, False)
        if not isinstance(v, bool):
            raise ModelFolderError(f"{where}: scheduler {key} {v!r} is not true or false")
        out[key] = v
    betas = config.get("trained_betas")
    if betas is not None:
        if not (
            isinstance(betas, list)
            and len(betas) == T
            and all(isinstance(b, (int, float)) and 0 < b < 1 for b in betas)
        ):
            raise ModelFolderError(f"{where}: trained_betas must be {T} numbers in (0, 1)")
        out["trained_betas"] = [float(b) for b in betas]
    return out


def check_data(folder: ModelFolder, data: DataSpec | None, field: str = "model.data") -> None:
    """The images the spec names (in `field`) against what the model takes, where that can be known."""
    if data is None:
        return
    c, h, _ = folder.image_shape
    size = data.image_size or NATIVE_SIZE.get(data.name)
    if size is not None and size != h:
        raise ModelFolderError(
            f"{field}: {data.name} images are {size}x{size}; the model takes {h}x{h} "
            f"(set {field}.image_size: {h} to resize them)"
        )
    channels = NATIVE_CHANNELS.get(data.name)
    if channels is not None and channels != c:
        raise ModelFolderError(f"{field}: {data.name} images have {channels} channels; the model takes {c}")
    if folder.class_embeds and data.name in CLASS_NAMES and len(CLASS_NAMES[data.name]) > folder.class_embeds:
        raise ModelFolderError(
            f"{field}: {data.name} has {len(CLASS_NAMES[data.name])} classes; the model knows "
            f"{folder.class_embeds}"
        )


# --- the Hub -------------------------------------------------------------------------------------


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def cached_snapshot(repo: str, revision: str | None) -> Path | None:
    """The snapshot of repo@revision already in the Hub cache, or None (reads the cache only)."""
    if Path(repo).is_absolute():
        return None
    folder = hub_cache() / f"models--{repo.replace('/', '--')}"
    rev = revision or "main"
    ref = folder / "refs" / rev
    commit = ref.read_text().strip()[:40] if ref.is_file() and ref.stat().st_size < 200 else rev
    snapshot = folder / "snapshots" / commit
    return snapshot if re.fullmatch(r"[0-9a-f]{40}", commit) and snapshot.is_dir() else None


def predownload_hint(ref: PretrainedModel) -> str:
    rev = f" --revision {ref.revision}" if ref.revision else ""
    return (
        f"download it on a machine that can reach the Hub with `huggingface-cli download "
        f"{ref.pretrained}{rev}` (HF_HUB_CACHE={hub_cache()} here), or name a local folder"
    )


def wanted_files(names: list[str], ref: PretrainedModel) -> list[str]:
    """The files of a repository the model needs: the UNet's config and weights, the scheduler config."""
    unet = ref.subfolder or ("unet" if "unet/config.json" in names else "")
    prefix = f"{unet}/" if unet else ""
    weights = WEIGHTS if f"{prefix}{WEIGHTS}" in names or not ref.allow_pickle else PICKLED
    want = [f"{prefix}config.json", f"{prefix}{weights}"]
    want += [f"scheduler/{SCHEDULER_CONFIG}", f"{prefix}{SCHEDULER_CONFIG}", SCHEDULER_CONFIG]
    return list(dict.fromkeys(n for n in want if n in names))


def download(ref: PretrainedModel, field: str = "model") -> tuple[Path, str]:
    """(the snapshot folder of the model's files in the Hub cache, the commit they are from). Offline
    (HF_HUB_OFFLINE=1), or when the Hub cannot be reached, the cache serves if it holds the revision."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def from_cache(why: str) -> tuple[Path, str]:
        snapshot = cached_snapshot(ref.pretrained, ref.revision)
        if snapshot is None:
            raise ModelFolderError(
                f"{field}.pretrained {ref}: {why}, and it is not in the cache; {predownload_hint(ref)}"
            )
        return snapshot, snapshot.name

    if offline():
        return from_cache("HF_HUB_OFFLINE is set")
    try:
        info = HfApi().model_info(ref.pretrained, revision=ref.revision, files_metadata=True)
    except GatedRepoError:
        raise ModelFolderError(
            f"{field}.pretrained {ref}: gated; accept its terms and log in (HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise ModelFolderError(
            f"{field}.pretrained {ref}: no such repository on the Hub (or it is private)"
        ) from None
    except RevisionNotFoundError:
        raise ModelFolderError(
            f"{field}.revision {ref.revision!r}: {ref.pretrained} has no such revision"
        ) from None
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as e:
        return from_cache(f"the Hub cannot be reached ({type(e).__name__})")
    except Exception as e:  # the HTTP client's own connection errors (httpx)
        if "connect" not in type(e).__name__.lower() and "timeout" not in type(e).__name__.lower():
            raise
        return from_cache(f"the Hub cannot be reached ({type(e).__name__}: {e})")
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or []}
    want = wanted_files(list(sizes), ref)
    where = f"{field}.pretrained {ref}"
    if not any(n.endswith("config.json") and "scheduler" not in n for n in want):
        raise ModelFolderError(
            f"{where}: the repository has no {ref.subfolder + '/' if ref.subfolder else ''}config.json: not a "
            f"diffusers model folder (a pipeline's UNet is named with {field}.subfolder: unet)"
        )
    if not any(n.endswith((WEIGHTS, PICKLED)) for n in want):
        pickled = any(n.endswith(PICKLED) for n in sizes)
        raise ModelFolderError(
            f"{field}.allow_pickle: {where} has only pickled weights ({PICKLED}), which can run code when "
            "loaded; set allow_pickle: true if you trust it"
            if pickled
            else f"{where}: no {WEIGHTS} beside its config.json"
        )
    total = sum(sizes[n] for n in want)
    if total > ref.max_download_gb * 1e9:
        raise ModelFolderError(
            f"{field}.max_download_gb: {ref.pretrained}'s model files are {total / 1e9:.1f} GB, over "
            f"{ref.max_download_gb:g}"
        )
    folder = snapshot_download(ref.pretrained, revision=info.sha, allow_patterns=want)
    return Path(folder), info.sha


# --- building it ---------------------------------------------------------------------------------


def _denoiser_class():
    import torch
    from torch import nn

    class Denoiser(nn.Module):
        """A published UNet2DModel behind the interface of the workbench's own UNetDenoiser: model(x, t, y)
        is the network's output in its prediction type (the samplers read which from the schedule),
        num_classes the classes it draws, null_class its unconditional class or None."""

        def __init__(self, unet, image_shape: tuple[int, int, int], class_null: bool):
            super().__init__()
            self.unet = unet
            self.image_shape = image_shape
            embeds = unet.config.num_class_embeds or 0
            self.num_classes = embeds - 1 if class_null and embeds else embeds
            self._null = embeds - 1 if class_null and embeds else None

        @property
        def null_class(self) -> int | None:
            return self._null

        def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            if self.num_classes and y is None:
                if self._null is None:
                    raise ValueError(
                        "the model is class-conditional without a null class: it cannot run without a "
                        "class (set model.class_null: true if its last class is the unconditional one)"
                    )
                y = torch.full((x.shape[0],), self._null, device=x.device, dtype=torch.long)
            t = t.reshape(-1).to(x.device)
            if t.numel() == 1:
                t = t.expand(x.shape[0])
            labels = y if self.unet.config.num_class_embeds else None
            return self.unet(x, t, class_labels=labels).sample.to(x.dtype)

    return Denoiser


@dataclass(frozen=True)
class Loaded:
    model: Any  # the Denoiser, in eval mode, float32, on the device
    schedule: Any  # a diffusers DDPMScheduler with the model's training schedule
    record: dict  # what the run records: where, the commit (Hub) or the weights' digest (folder)


def load(ref: PretrainedModel, device, field: str = "model") -> Loaded:
    """The model and schedule `ref` names, downloaded into the Hub cache first where needed."""
    import hashlib

    from diffusers import DDPMScheduler, UNet2DModel

    if ref.local is not None:
        folder, commit = ref.local, None
    else:
        folder, commit = download(ref, field)
    found = inspect_folder(folder, ref, field)
    check_data(found, ref.data, f"{field}.data")
    where = f"{field}.pretrained {ref.pretrained}"
    settings = schedule_settings(found.scheduler, where)
    schedule = DDPMScheduler(**settings)
    check_size(found, where)
    unet = UNet2DModel.from_pretrained(
        str(found.unet_dir),
        use_safetensors=found.weights.name == WEIGHTS,
        local_files_only=True,
        low_cpu_mem_usage=False,
    )
    model = _denoiser_class()(unet.float(), found.image_shape, ref.class_null).to(device).eval()
    h = hashlib.sha256()
    with found.weights.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    record = {
        "pretrained": ref.pretrained,
        "revision": commit,
        "subfolder": ref.subfolder,
        "weights_sha256": h.hexdigest(),
        "prediction_type": settings["prediction_type"],
        "beta_schedule": settings["beta_schedule"],
        "timesteps": settings["num_train_timesteps"],
    }
    return Loaded(model, schedule, record)


MAX_PARAMETERS = 4_000_000_000


def check_size(found: ModelFolder, where: str) -> None:
    """The UNet its config describes, sized on the meta device (nothing allocated): at most
    MAX_PARAMETERS, and no larger than its weights file holds at 2 bytes a parameter, so a config cannot
    make the loader allocate a network its weights do not fill."""
    import torch
    from diffusers import UNet2DModel

    try:
        with torch.device("meta"):
            shell = UNet2DModel.from_config(found.config)
    except Exception as e:  # noqa: BLE001 - a config diffusers cannot build, whatever its complaint
        raise ModelFolderError(
            f"{where}: its config.json does not build a UNet2DModel ({type(e).__name__}: {e})"
        ) from None
    params = sum(p.numel() for p in shell.parameters())
    stored = found.weights.stat().st_size
    if params > MAX_PARAMETERS or 2 * params > stored + (1 << 20):
        raise ModelFolderError(
            f"{where}: its config.json describes a UNet of {params / 1e6:,.1f}M parameters and its weights "
            f"file holds {stored / 1e6:,.1f} MB: they do not belong together"
            + (f" (at most {MAX_PARAMETERS / 1e9:g}G parameters)" if params > MAX_PARAMETERS else "")
        )


def save_workbench_model(model, schedule, folder: Path) -> None:
    """A workbench UNetDenoiser and its schedule as a diffusers model folder (config.json and safetensors
    weights, scheduler/scheduler_config.json): what `pretrained:` reads, and what the Hub publishes."""
    folder = Path(folder)
    model.unet.save_pretrained(str(folder), safe_serialization=True)
    schedule.save_config(str(folder / "scheduler"))


DIFFUSERS_FILES = ("config.json", WEIGHTS, f"scheduler/{SCHEDULER_CONFIG}", "README.md")  # all publish writes


def diffusers_card(run_id: int, run_name: str, spec: dict, summary: dict, classes: list[str]) -> str:
    """The model card of an images run published in diffusers' layout: what it is, how to load it, its
    figures with their intervals (classifier-FID: comparable between workbench runs only)."""
    data = spec.get("data", {}).get("name", "?")

    def estimate(key: str) -> str:
        v, ci, n = summary.get(key), summary.get(f"{key}_ci"), summary.get(f"{key}_n")
        if not isinstance(v, (int, float)):
            return "not measured"
        return f"{v:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}] (95 %, n = {n} sample sets)" if ci else "")

    from workbench.text import printable

    classes = [printable(c).replace("`", "'") for c in classes]  # image folder names: outside text
    conditional = bool(classes)
    load = f"{{pretrained: THIS_REPO{', class_null: true' if conditional else ''}, data: {{name: {data}}}}}"
    return "\n".join(
        [
            "---",
            "library_name: diffusers",
            "tags:",
            "  - workbench",
            f"  - {'class-conditional' if conditional else 'unconditional'}-image-generation",
            "---",
            "",
            f"# {run_name}",
            "",
            f"A pixel-space DDPM UNet (diffusers `UNet2DModel`) trained by workbench run {run_id} on {data} "
            f"({spec.get('train', {}).get('steps', '?')} steps, {spec.get('schedule', '?')} schedule, "
            f"{spec.get('timesteps', '?')} timesteps, epsilon prediction; EMA weights).",
            (
                f"Class-conditional: labels 0-{len(classes) - 1} ({', '.join(classes)}); label {len(classes)}, "
                "the last, is the unconditional (null) class of classifier-free guidance."
                if conditional
                else "Unconditional."
            ),
            "",
            "## Results",
            "",
            f"- classifier-FID: {estimate('classifier_fid')}; real images at the same size: "
            f"{estimate('classifier_fid_floor')}. The distance between a workbench reference classifier's "
            "features, not Inception FID: compare it only with other workbench runs on the same data.",
            "",
            "## Use",
            "",
            f"In a workbench spec: `model: {load}`. In diffusers: `UNet2DModel.from_pretrained(THIS_REPO)` and "
            '`DDPMScheduler.from_pretrained(THIS_REPO, subfolder="scheduler")`.',
            "",
        ]
    )


def write_published_folder(folder: Path, model, schedule, card: str, force: bool = False) -> Path:
    """DIFFUSERS_FILES in `folder` (created; refused when it holds anything, unless `force`, which
    replaces only these: attributor.place_files). Written apart first, then copied."""
    import tempfile

    from workbench.jobs.attributor import place_files

    with tempfile.TemporaryDirectory() as tmp:
        save_workbench_model(model, schedule, Path(tmp))
        files: dict[str, Path | str] = {n: Path(tmp) / n for n in DIFFUSERS_FILES[:-1]}
        return place_files(folder, {**files, "README.md": card}, force, DIFFUSERS_FILES)

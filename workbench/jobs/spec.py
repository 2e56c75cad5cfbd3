"""What a kind's spec is built from: BaseSpec (the fields every kind has), checked names, paths a spec
names (ExistingPath), other runs it builds on (RunRef), and deep_merge for presets.

Reading a job file (YAML, presets, sweeps, the kinds registry, JSON Schema) is jobs.jobfile's; this
module imports no kind, so every kind can import it.
"""

from __future__ import annotations

import copy
import unicodedata
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
)

MAX_NAME_LENGTH = 200
MAX_RUN_NAME_LENGTH = 300  # the experiment's name and the sweep's values (the store's column)


UNSAFE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")  # control, format (bidi), surrogate, private, breaks


def check_name(name: str, max_length: int | None = MAX_NAME_LENGTH) -> str:
    """A name shown in terminals and tables: printable, no control or format characters (NUL, ESC, a
    bidi override), not blank, not padded, at most `max_length` characters."""
    bad = sorted({c for c in name if unicodedata.category(c) in UNSAFE_CATEGORIES})
    if bad:
        raise ValueError(
            "contains control or format characters ("
            + ", ".join(f"U+{ord(c):04X}" for c in bad)
            + "); use printable text"
        )
    if not name.strip():
        raise ValueError("is blank")
    if name != name.strip():
        raise ValueError("starts or ends with whitespace")
    if max_length is not None and len(name) > max_length:
        raise ValueError(f"is {len(name)} characters long; at most {max_length}")
    return name


def _existing_path(value: str, info: ValidationInfo) -> str:
    """Relative to the spec file's folder (see resolve), made absolute, and it must exist."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path((info.context or {}).get("base_dir") or Path.cwd()) / path
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    return str(path.resolve())


# A file or folder a spec names: stored absolute, so a run does not depend on the worker's directory.
ExistingPath = Annotated[str, AfterValidator(_existing_path)]


class RunName(BaseModel):
    """A finished run named by its experiment (and run name) instead of its id, so a chain of specs (a
    model, then what is built on it) is a set of committed files. The newest succeeded run that matches
    serves; the run records which one it used."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    experiment: Annotated[str, AfterValidator(check_name)] = Field(max_length=MAX_NAME_LENGTH)
    name: Annotated[str, AfterValidator(check_name)] | None = Field(
        None,
        max_length=MAX_RUN_NAME_LENGTH,
        description="the run's name (a sweep's runs are named by their values); default: the experiment's",
    )

    def __str__(self) -> str:
        return self.experiment if self.name is None else f"{self.experiment}/{self.name}"


# Another run a spec builds on: its id, or {experiment, name} (see RunName).
RunRef = Annotated[int, Field(ge=1)] | RunName


class BaseSpec(BaseModel):
    """Fields every kind has."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {}}

    kind: str
    name: Annotated[str, AfterValidator(check_name)] | None = Field(
        None, max_length=MAX_NAME_LENGTH, description="experiment name; defaults to the file name"
    )
    preset: Literal["smoke", "paper"] = Field("smoke", description="size preset; fields you set override it")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
        description="auto: cuda, else mps, else cpu (within the worker's device slot)",
    )
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict, description="dotted field path -> values; one run per combination"
    )
    threads: int | None = Field(
        None, ge=1, le=4096, description="torch CPU threads (default: the worker's share of the host's cores)"
    )
    time_limit_minutes: float | None = Field(
        None,
        gt=0,
        le=525_600,
        description="the Slurm job's time limit (slurm backend; past it the job is requeued and resumes)",
    )
    no_progress_minutes: float = Field(
        30.0,
        ge=0.05,
        le=10_080,
        description="kill the run when it reports no step, metric or event for this long (a hung run)",
    )

    @classmethod
    def preset_fields(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """The fields the document's preset sets (its own fields override them)."""
        preset = raw.get("preset", "smoke")
        return cls.PRESETS.get(preset, {}) if isinstance(preset, str) else {}


# --- presets ----------------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = (
            deep_merge(out[k], v)
            if isinstance(v, dict) and isinstance(out.get(k), dict)
            else copy.deepcopy(v)
        )
    return out

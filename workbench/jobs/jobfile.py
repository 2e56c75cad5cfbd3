"""Job files: YAML -> pydantic v2 models discriminated by `kind`, presets, sweeps, JSON Schema.

A spec document is one kind's fields plus `sweep:` (dotted field path -> list of values). Field
defaults are the `smoke` preset; other presets (`paper`) override them, and the user's fields
override the preset. Every error names the field path and the YAML line it came from.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import typing
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from workbench.jobs.kinds import kind_names, load_kind
from workbench.jobs.spec import MAX_RUN_NAME_LENGTH, UNSAFE_CATEGORIES, BaseSpec, check_name, deep_merge

MAX_SWEEP_RUNS = 10_000
# Bounds on a spec document's structure: a job spec is a page of YAML, never more.
MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_DEPTH = 32
MAX_SPEC_NODES = 100_000  # counting what aliases expand to ("billion laughs")


class SpecError(Exception):
    """Invalid job input. `problems` holds one line per problem, each naming the field and YAML line."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else problems
        super().__init__("\n".join(self.problems))


@dataclass
class Job:
    """A validated spec document: the experiment and the runs its sweep expands into."""

    name: str
    kind: str
    text: str
    sweep: dict[str, list[Any]]
    runs: list[tuple[str, BaseSpec]]  # (run name, resolved spec)


# --- YAML with line numbers ----------------------------------------------------------------------


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each key path in a composed YAML document to its 1-based line."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[(*path, key)] = k.start_mark.line + 1
            _line_map(v, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[(*path, i)] = v.start_mark.line + 1
            _line_map(v, (*path, i), out)
    return out


def _check_structure(node: yaml.Node | None, source: str) -> None:
    """Refuse what no job spec needs and what would blow up later: nesting past MAX_SPEC_DEPTH, more
    than MAX_SPEC_NODES nodes once aliases are expanded, and duplicate keys (YAML keeps the last one
    silently, so a second `steps:` would override the first without a word)."""
    stack, seen = [(node, 1)], 0
    while stack:
        n, depth = stack.pop()
        if n is None:
            continue
        seen += 1
        if seen > MAX_SPEC_NODES:
            raise SpecError(
                f"{source}: the document expands to more than {MAX_SPEC_NODES} values "
                "(aliases included); a job spec is far smaller"
            )
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(
                f"{source}:{n.start_mark.line + 1}: nested more than {MAX_SPEC_DEPTH} levels deep"
            )
        if isinstance(n, yaml.MappingNode):
            keys: dict[Any, int] = {}
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else id(k)
                if key in keys:
                    raise SpecError(
                        f"{source}:{k.start_mark.line + 1}: duplicate key {key!r} (first on line {keys[key]})"
                    )
                keys[key] = k.start_mark.line + 1
                stack += [(k, depth + 1), (v, depth + 1)]
        elif isinstance(n, yaml.SequenceNode):
            stack += [(v, depth + 1) for v in n.value]
        elif isinstance(n, yaml.ScalarNode):  # the value after YAML's escapes: "\e" is ESC
            bad = next(
                (c for c in n.value if c not in "\t\n" and unicodedata.category(c) in UNSAFE_CATEGORIES), None
            )
            if bad is not None:
                raise SpecError(
                    f"{source}:{n.start_mark.line + 1}: control or format character U+{ord(bad):04X} in a "
                    'value (written as an escape such as "\\e" or "\\u202e"); use printable text'
                )


def parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[tuple, int]]:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise SpecError(
            f"{source}: {len(text.encode('utf-8', 'surrogatepass'))} bytes; a job spec is at most "
            f"{MAX_SPEC_BYTES} bytes"
        )
    if bad := next((c for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n\r"), None):
        line = text[: text.index(bad)].count("\n") + 1
        raise SpecError(f"{source}:{line}: control character U+{ord(bad):04X} in the document")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_structure(node, source)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        # YAML notices an unclosed bracket or quote where it stumbles, often a line or more later: the
        # line where the construct began is named first, the stumble after it.
        mark, begun = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        where = f"{source}:{(begun or mark).line + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e)
        if begun is not None and mark is not None and begun.line != mark.line:
            problem = f"{getattr(e, 'context', None) or 'here'}, {problem} on line {mark.line + 1}"
        raise SpecError(f"{where}: malformed YAML: {problem}") from None
    except RecursionError:
        raise SpecError(f"{source}: nested too deeply (at most {MAX_SPEC_DEPTH} levels)") from None
    except ValueError as e:  # an integer of more digits than Python converts (4300)
        raise SpecError(
            f"{source}: a value cannot be read (a number of thousands of digits?): {str(e).split(';')[0]}"
        ) from None
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: a job spec must be a YAML mapping with a `kind:` field, got {type(data).__name__}"
        )
    return data, (_line_map(node) if node is not None else {})


def _where(source: str, lines: dict[tuple, int], loc: tuple) -> str:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return f"{source}:{lines[loc[:n]]}"
    return source


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(document)"


# --- presets and sweeps --------------------------------------------------------------------------


def _did_you_mean(spec_cls: type[BaseModel], loc: tuple) -> str:
    """`; did you mean 'steps'?` for a field name close to one the model at `loc` has, else ``."""
    model: type[BaseModel] | None = spec_cls
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model is not None else None
        model = _model_of(field.annotation) if field is not None else None
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (m := _model_of(arg)) is not None:
            return m
    return None


def check_field_path(spec_cls: type[BaseModel], dotted: str) -> None:
    """Raise KeyError naming the first part of `dotted` that is not a field."""
    model: type[BaseModel] | None = spec_cls
    for i, part in enumerate(dotted.split(".")):
        if model is None or part not in model.model_fields:
            raise KeyError(".".join(dotted.split(".")[: i + 1]))
        model = _model_of(model.model_fields[part].annotation)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise SpecError(f"sweep.{dotted}: {p} is set to a value that is not a mapping")
    data[last] = value


def _format(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def resolve(spec_cls: type[BaseSpec], raw: dict[str, Any], base_dir: Path | None = None) -> BaseSpec:
    """Apply the preset the document names under its own fields and validate.

    `base_dir` is where relative file paths in the spec (data.path) are taken from: the spec file's
    folder. They are stored absolute, so a run does not depend on the worker's working directory.
    """
    return spec_cls.model_validate(
        deep_merge(spec_cls.preset_fields(raw), raw), context={"base_dir": base_dir or Path.cwd()}
    )


def load_job(text: str, source: str = "<spec>", name: str | None = None, base_dir: Path | None = None) -> Job:
    """Validate a spec document and expand its sweep. Raises SpecError listing every problem.

    Relative paths in it are taken from `base_dir` (default: the current directory).
    """
    raw, lines = parse_yaml(text, source)
    kind = raw.get("kind")
    if kind is None:
        raise SpecError(f"{_where(source, lines, ())}: kind: missing; one of {', '.join(kind_names())}")
    if not isinstance(kind, str) or kind not in kind_names():
        raise SpecError(
            f"{_where(source, lines, ('kind',))}: kind: unknown kind {kind!r}; "
            f"one of {', '.join(kind_names())}"
        )
    spec_cls = load_kind(kind).Spec

    sweep = raw.pop("sweep", None) or {}
    if not isinstance(sweep, dict):
        raise SpecError(
            f"{_where(source, lines, ('sweep',))}: sweep: must map dotted field paths to lists of values"
        )
    problems = []
    for path, values in sweep.items():
        where = _where(source, lines, ("sweep", path))
        if path in ("kind", "sweep"):
            problems.append(f"{where}: sweep.{path}: cannot be swept")
            continue
        try:
            check_field_path(spec_cls, str(path))
        except KeyError as e:
            problems.append(f"{where}: sweep.{path}: {e.args[0]!r} is not a field of a {kind} spec")
        if not isinstance(values, list) or not values:
            problems.append(f"{where}: sweep.{path}: must be a non-empty list of values")
    if problems:
        raise SpecError(problems)
    n_runs = 1
    for values in sweep.values():
        n_runs *= len(values)
    if n_runs > MAX_SWEEP_RUNS:
        raise SpecError(
            f"{_where(source, lines, ('sweep',))}: sweep: {n_runs} combinations, more than {MAX_SWEEP_RUNS}"
        )

    exp_name = raw.get("name") or name or Path(source).stem
    try:
        check_name(str(exp_name))
    except ValueError as e:
        where = _where(source, lines, ("name",)) if "name" in raw else source
        raise SpecError(f"{where}: name: {exp_name!r} {e}") from None
    runs: list[tuple[str, BaseSpec]] = []
    combo_problems: dict[str, list[str]] = {}  # problem -> labels of the sweep runs that have it
    for combo in itertools.product(*sweep.values()) if sweep else [()]:
        doc = copy.deepcopy(raw)
        combo_lines = dict(lines)
        for path, value in zip(sweep, combo, strict=True):
            _set_path(doc, path, value)
            combo_lines[tuple(path.split("."))] = lines.get(("sweep", path), 0)
        label = " ".join(f"{p}={_format(v)}" for p, v in zip(sweep, combo, strict=True))
        try:
            spec = resolve(spec_cls, doc, base_dir)
        except ValidationError as e:
            for err in e.errors():
                loc = tuple(err["loc"])
                msg = err["msg"] + (
                    f" (got {err['input']!r})"
                    if "input" in err and err["type"] != "missing" and not isinstance(err["input"], dict)
                    else ""
                )
                if err["type"] == "extra_forbidden":
                    msg += _did_you_mean(spec_cls, loc)
                combo_problems.setdefault(
                    f"{_where(source, combo_lines, loc)}: {_dotted(loc)}: {msg}", []
                ).append(label)
            continue
        spec.name = exp_name
        run_name = f"{exp_name} {label}".strip()
        try:
            check_name(run_name, max_length=None)  # every character, however long the sweep's label
        except ValueError as e:
            problems.append(f"{_where(source, lines, ('sweep',))}: sweep: the run name {run_name!r} {e}")
            continue
        runs.append((_shortened(run_name, exp_name, label), spec))
    n_combos = len(runs) + len({lab for labels in combo_problems.values() for lab in labels})
    for problem, labels in combo_problems.items():  # a problem every sweep run shares is said once
        problems += [problem] if len(labels) == n_combos else [f"{problem} [sweep {lab}]" for lab in labels]
    if problems:
        raise SpecError(problems)
    return Job(name=exp_name, kind=kind, text=text, sweep=sweep, runs=runs)


def _shortened(run_name: str, exp_name: str, label: str) -> str:
    """A run name that fits the store's column: the experiment's name gives way first (the sweep's label
    tells the runs apart), then the label's middle."""
    if len(run_name) <= MAX_RUN_NAME_LENGTH:
        return run_name
    keep = MAX_RUN_NAME_LENGTH - len(label) - 2
    if keep >= 20:
        return f"{exp_name[:keep]}… {label}"
    half = (MAX_RUN_NAME_LENGTH - 1) // 2
    return f"{label[:half]}…{label[-(MAX_RUN_NAME_LENGTH - 1 - half) :]}"


def read_spec_file(path: str | Path) -> str:
    """A spec file's text, read no further than MAX_SPEC_BYTES (`/dev/zero`, a log file, an image named
    by mistake: refused after a megabyte, never read whole). SpecError when it cannot be read."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES} bytes; a job spec is far smaller")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read {path}: {e.strerror if isinstance(e, OSError) else e}") from None


def load_job_file(path: str | Path) -> Job:
    path = Path(path)
    return load_job(read_spec_file(path), str(path), base_dir=path.resolve().parent)


def spec_from_dict(data: dict[str, Any]) -> BaseSpec:
    """Rebuild a stored, already resolved spec."""
    return load_kind(data["kind"]).Spec.model_validate(data)


def json_schema() -> dict[str, Any]:
    specs = tuple(load_kind(k).Spec for k in kind_names())
    union = Annotated[typing.Union[specs], Field(discriminator="kind")]  # noqa: UP007
    schema = TypeAdapter(union).json_schema()
    schema["title"] = "workbench job spec"
    return schema

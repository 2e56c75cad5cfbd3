"""Results as people read them, for the CLI and the TUI alike: one cell format for every value and
estimate (`readable`, `cell`, `headline`), and exports (`workbench export`): result tables -> CSV,
Markdown, LaTeX or JSON; curves -> one PNG per metric with every run overlaid; sample images -> the
newest of each, copied. The store below keeps persistence only; nothing here writes to it.

Exporting several runs stacks each named table across them with `run` and `run_name` columns in
front; the `summary` table holds one row per run with its headline numbers (nested mappings such
as guided_accuracy become columns like `guided_accuracy[3.0]`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.jobs.metrics.stats import Estimate
from workbench.store.models import RunStatus
from workbench.text import printable, spreadsheet_cell

if TYPE_CHECKING:
    from workbench.store.queries import RunDetail

FORMATS = ("csv", "md", "latex", "json")


def flatten(values: dict[str, Any]) -> dict[str, Any]:
    """A summary's nested mappings as keys: {"guided_accuracy": {"3.0": x}} -> {"guided_accuracy[3.0]": x}."""
    return _flat(values, "[{}]")


def _flat(values: dict[str, Any], child: str, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = prefix + child.format(k) if prefix else str(k)
        out.update(_flat(v, child, key) if isinstance(v, dict) else {key: v})
    return out


def readable(row: dict[str, Any], with_n: bool = True) -> dict[str, Any]:
    """A result row or a flattened summary for people: each estimate's interval (and, with_n, its number
    of draws) folded into its value's cell, `0.0016 [0.00121, 0.002] n=20`, the separate keys dropped.
    The machine formats (CSV, JSON, `--json`) keep them separate."""
    folded: set[str] = set()
    out: dict[str, Any] = {}
    for key, value in row.items():
        names = Estimate.column_names(key)
        if (est := Estimate.from_columns(row, key)) is not None:
            out[key] = estimate_cell(est, with_n)
            folded.update(names)
        elif value is None and any(name in row for name in names):  # no estimate in this row
            out[key] = None
            folded.update(names)
        else:
            out[key] = value
    return {k: v for k, v in out.items() if k not in folded}


def estimate_cell(est: Estimate, with_n: bool = True) -> str:
    """`0.0016 [0.00121, 0.002] n=20`; `0.5 (no interval) n=1` where the draws give none."""
    text = (
        f"{cell(est.value)} [{cell(est.low)}, {cell(est.high)}]"
        if est.has_interval
        else (f"{cell(est.value)} (no interval)")
    )
    return text + (f" n={est.n}" if with_n and est.n is not None else "")


RECORD_FIELDS = ("id", "experiment", "name", "kind", "status", "attempt", "device", "priority", "note")
OPERATORS = (">=", "<=", "!=", "=", ">", "<", "~")


def run_fields(record: Any, spec: dict[str, Any] | None) -> dict[str, Any]:
    """Everything a runs list can show or filter on, by name: the record's own fields, its summary
    flattened (`guided_accuracy[3.0]`, with `_ci`/`_n` beside each estimate), and its spec's fields by
    dotted path (`data.source`, `train.steps`; also as `spec.data.source`)."""
    fields: dict[str, Any] = {}
    for key, value in _dotted(spec or {}).items():
        fields[key] = fields[f"spec.{key}"] = value
    fields.update(flatten(record.summary or {}))
    fields.update(
        {f: str(getattr(record, f)) if f == "status" else getattr(record, f) for f in RECORD_FIELDS}
    )
    fields["tags"] = " ".join(record.tags)  # `tags~best` finds a run tagged best
    return fields


def field_cell(fields: dict[str, Any], name: str) -> Any:
    """A run_fields field as a column shows it: an estimate as `mean [low, high]`, else the value."""
    est = Estimate.from_columns(fields, name)
    return fields.get(name) if est is None else estimate_cell(est, with_n=False)


def field_names(fields: dict[str, Any]) -> list[str]:
    """The fields of run_fields worth a column: estimates once (not their `_ci`/`_n` parts), spec fields
    once (not again as `spec.`), the record's own fields left to the caller."""
    parts = {
        part
        for key in fields
        if Estimate.from_columns(fields, key) is not None
        for part in Estimate.column_names(key)
        if part in fields
    }
    return [k for k in fields if k not in parts and not k.startswith("spec.") and k not in RECORD_FIELDS]


def _dotted(values: dict[str, Any]) -> dict[str, Any]:
    """A spec's nested fields as dotted paths: {"train": {"steps": 3}} -> {"train.steps": 3}."""
    return _flat(values, ".{}")


@dataclass(frozen=True)
class Condition:
    """One `--where` term: `top1>0.9`, `kind=attribution`, `dataset=moons`, `name~seed` (contains)."""

    field: str
    op: str
    value: str

    @classmethod
    def parse(cls, term: str) -> Condition:
        found = [(term.find(op), -len(op), op) for op in OPERATORS if term.find(op) > 0]
        if found:  # the first operator in the term, the longest at that place (`>=`, not `>`)
            at, _, op = min(found)
            if value := term[at + len(op) :]:
                return cls(term[:at], op, value)
        raise ValueError(f"{term!r}: write FIELD OP VALUE with OP one of {' '.join(OPERATORS)} (no spaces)")

    def holds(self, fields: dict[str, Any]) -> bool:
        """False when the run has no such field (a run without `top1` is not one with top1 > 0.9)."""
        if self.field not in fields or fields[self.field] is None:
            return False
        have = fields[self.field]
        if self.op == "~":
            return self.value.lower() in str(have).lower()
        number = _number(self.value)
        if isinstance(have, int | float) and not isinstance(have, bool) and number is not None:
            a, b = float(have), number
        elif self.op in ("=", "!="):
            a, b = str(have).lower() if isinstance(have, bool) else str(have), self.value
        else:
            return False  # an order between text and a number, or two texts: not asked for
        return {
            "=": a == b,
            "!=": a != b,
            ">": a > b,
            "<": a < b,
            ">=": a >= b,
            "<=": a <= b,
        }[self.op]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_where(text: str) -> list[Condition]:
    """`top1>0.9 kind=attribution` -> every term must hold. ValueError names a term it cannot read."""
    return [Condition.parse(term) for term in text.split()]


def readable_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`readable` for a table: a column whose estimates all come from the same number of draws says so
    once, in its name (`energy_distance (n=20)`), not in every cell."""
    ns: dict[str, set] = {}
    for row in rows:
        for key in row:
            if (est := Estimate.from_columns(row, key)) is not None:
                ns.setdefault(key, set()).add(est.n)
    shared = {k: next(iter(v)) for k, v in ns.items() if len(v) == 1 and None not in v}
    out = []
    for row in rows:
        r = readable(row, with_n=False)
        named = {}
        for k, v in r.items():
            est = Estimate.from_columns(row, k) if k in ns and k not in shared else None
            named[f"{k} (n={shared[k]})" if k in shared else k] = (
                f"{v} n={est.n}" if est is not None and est.n is not None else v
            )
        out.append(named)
    return out


def headline(summary: dict[str, Any], keys: tuple[str, ...] = ()) -> str:
    """The run's headline figure, as `key=value [low, high]`: the first of `keys` (its kind's HEADLINE,
    see jobs.kinds.headline_keys) that the summary has, else its first numeric value."""
    summary = summary or {}
    numeric = {k: v for k, v in summary.items() if isinstance(v, float | int) and not isinstance(v, bool)}
    key = next((k for k in keys if k in numeric), next(iter(numeric), None))
    if not key:
        return ""
    est = Estimate.from_columns(summary, key)
    interval = f" [{est.low:.3g}, {est.high:.3g}]" if est is not None and est.has_interval else ""
    return f"{key}={numeric[key]:.4g}{interval}"


def collect(records: list[RunDetail], table: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Stack the tables of several runs (`store.queries.show`): {table name: rows with run columns first}."""
    stacked: dict[str, list[dict[str, Any]]] = {}
    if table in (None, "summary"):
        stacked["summary"] = [
            {"run": r.id, "run_name": r.name, "kind": r.kind, "status": str(r.status), **flatten(r.summary)}
            for r in records
        ]
    for r in records:
        for name, rows in r.tables.items():
            if table is None or name == table:
                stacked.setdefault(name, []).extend(
                    {"run": r.id, "run_name": r.name, **flatten(row)} for row in rows
                )
    return stacked


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row))


def cell(v: Any) -> str:
    """A value as people read it in a table (CLI, TUI, Markdown, LaTeX): outside text `printable`."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "-"
    if isinstance(v, list | dict):
        return json.dumps(v)
    return printable(str(v))


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Strings as a spreadsheet shows text (no formula starts, nothing unprintable); lists and mappings
    as JSON."""
    cols = _columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([spreadsheet_cell(c) for c in cols])
    for row in rows:
        values = (row.get(c) for c in cols)
        writer.writerow(
            [spreadsheet_cell(json.dumps(v) if isinstance(v, list | dict) else v) for v in values]
        )
    return buf.getvalue()


def to_markdown(rows: list[dict[str, Any]]) -> str:
    cols = _columns(rows)
    esc = [[cell(row.get(c)).replace("|", "\\|") for c in cols] for row in rows]
    header = [cell(c).replace("|", "\\|") for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(rows: list[dict[str, Any]], caption: str) -> str:
    cols = _columns(rows)
    align = "".join(
        "r" if all(isinstance(r.get(c), int | float) for r in rows if r.get(c) is not None) else "l"
        for c in cols
    )
    out = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{latex_escape(caption)}}}",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(latex_escape(printable(c)) for c in cols) + " \\\\",
        "\\midrule",
    ]
    out += [" & ".join(latex_escape(cell(row.get(c))) for c in cols) + " \\\\" for row in rows]
    out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(out) + "\n"


def render(tables: dict[str, list[dict[str, Any]]], fmt: str) -> str:
    """All tables in one document (CSV: one section per table, each headed `# <name>`)."""
    if fmt == "json":
        return json.dumps(tables, indent=2) + "\n"
    parts = []
    for name, rows in tables.items():
        if fmt == "csv":
            parts.append((f"# {name}\n" if len(tables) > 1 else "") + to_csv(rows))
        elif fmt == "md":
            parts.append(f"## {name}\n\n" + to_markdown(rows))
        elif fmt == "latex":
            parts.append(to_latex(rows, name))
        else:
            raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return "\n".join(parts)


def write(tables: dict[str, list[dict[str, Any]]], fmt: str, path: Path) -> list[Path]:
    """Write to `path`; CSV with several tables writes one file per table (`<stem>-<table>.csv`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv" and len(tables) > 1:
        written = []
        for name, rows in tables.items():
            p = path.with_name(f"{path.stem}-{name}{path.suffix or '.csv'}")
            p.write_text(to_csv(rows))
            written.append(p)
        return written
    path.write_text(render(tables, fmt))
    return [path]


def file_part(name: str) -> str:
    """A metric or artifact name as part of one file name: `part0/loss` -> `part0_loss`; nothing that
    makes a folder, hides the file or leaves the export's folder."""
    return re.sub(r"[^\w.=+-]", "_", name).lstrip(".")[:150] or "_"


def _unused(path: Path, written: list[Path]) -> Path:
    """`path`, or `<stem>-2`, `-3`, ... when this export already wrote a file of that name."""
    candidate, n = path, 1
    while candidate in written:
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def export_runs(
    store,
    run_ids: list[int],
    fmt: str,
    path: Path,
    tables: bool = True,
    curves: bool = False,
    samples: bool = False,
    table: str | None = None,
) -> list[Path]:
    """Write what was asked for at and next to `path`: the tables (all, or only `table`) in `fmt`;
    `<stem>-curve-<metric>.png` per metric and every point in `<stem>-curves.csv` (run, metric, step,
    value); `<stem>-images/run<id>-<name>.png`. Returns the files written."""
    from workbench.store.queries import artifacts, metric_keys, show

    path = Path(path).expanduser()
    written: list[Path] = []
    if tables:
        written += write(collect([show(store, r) for r in run_ids], table), fmt, path)
    if curves:
        plt = pyplot()
        keys = sorted({k for r in run_ids for k in metric_keys(store, r)})
        points = []  # every curve as numbers too: one long CSV (run, metric, step, value)
        for key in keys:
            fig, series = curve_figure(store, run_ids, key)
            points += [
                {"run": r, "metric": key, "step": st, "value": v}
                for r, pts in series.items()
                for st, v in pts
            ]
            out = path.with_name(f"{path.stem}-curve-{file_part(key)}.png")
            out = _unused(out, written)  # `a_b` after `a/b`: both keep a file
            fig.savefig(out, dpi=100, bbox_inches="tight")
            plt.close(fig)
            written.append(out)
        if points:
            out = path.with_name(f"{path.stem}-curves.csv")
            out.write_text(to_csv(points))
            written.append(out)
    if samples:
        folder = path.with_name(f"{path.stem}-images")
        for r in run_ids:
            latest: dict[str, object] = {}
            for a in artifacts(store, r, "image"):
                latest[a.name] = a  # artifacts come in id order: the last one is the newest
            for name, a in latest.items():
                src = store.home / a.path
                if src.exists():
                    out = folder / f"run{r}-{file_part(name)}.png"
                    out = _unused(out, written)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, out)
                    written.append(out)
    return written


def pyplot():
    """matplotlib's pyplot, drawing to files only (no display over SSH)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_figure(store, run_ids: list[int], key: str):
    """(a matplotlib figure of metric `key` with every run that logged it overlaid, {run: its points})."""
    from workbench.store.queries import metric_series

    fig, ax = pyplot().subplots(figsize=(6, 4))
    series = {}
    for r in run_ids:
        if pts := metric_series(store, r, key):
            series[r] = pts
            ax.plot(*zip(*pts, strict=True), label=f"run {r}")
    ax.set_xlabel("step")
    ax.set_ylabel(printable(key))
    ax.legend()
    return fig, series


# --- one page to read anywhere ---------------------------------------------------------------------

MAX_EMBEDDED_IMAGE = 16 << 20  # bytes; a bigger artifact is listed, not embedded
PAGE_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; } h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: .5em 0; font-variant-numeric: tabular-nums; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } pre { background: #f7f7f7; padding: .6em; overflow-x: auto; }
img { max-width: 100%; image-rendering: pixelated; border: 1px solid #eee; }
figure { display: inline-block; margin: .5em; vertical-align: top; } figcaption { font-size: .85em; }
.status { font-weight: bold; }
"""


@dataclass(frozen=True)
class Figure:
    """A picture for a report: its name, caption, and PNG bytes (None: listed, not shown)."""

    name: str
    caption: str
    png: bytes | None


@dataclass(frozen=True)
class RunReport:
    """What a report shows of one run, read once; html_report and markdown_report each lay it out."""

    record: RunDetail
    summary: dict[str, Any]
    curves: list[Figure]
    images: list[Figure]
    spec: str


def run_reports(store, run_ids: list[int]) -> list[RunReport]:
    """Each run's record, readable summary, curves drawn as PNGs, the newest of each of its images (one
    over MAX_EMBEDDED_IMAGE, or gone, is listed without its picture) and spec as YAML. Captions name
    files relative to the store's home: a report leaves the machine, its folder layout need not."""
    import io as _io

    import yaml

    from workbench.store.queries import artifacts, metric_keys, show

    plt = pyplot()
    reports = []
    for run_id in run_ids:
        rec = show(store, run_id)
        curves = []
        for key in metric_keys(store, run_id):
            fig, _ = curve_figure(store, [run_id], key)
            buf = _io.BytesIO()
            fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
            plt.close(fig)
            curves.append(Figure(key, key, buf.getvalue()))
        latest: dict[str, Any] = {}
        for a in artifacts(store, run_id, "image"):
            latest[a.name] = a  # oldest first: the last of a name is the newest
        images = []
        for name, a in latest.items():
            src = store.home / a.path
            caption = name + (f" @ step {a.step}" if a.step is not None else "") + f" ({a.path})"
            fits = src.is_file() and src.stat().st_size <= MAX_EMBEDDED_IMAGE
            images.append(Figure(name, caption, src.read_bytes() if fits else None))
        spec = yaml.safe_dump(rec.spec, sort_keys=False, allow_unicode=True)
        reports.append(RunReport(rec, readable(flatten(rec.summary)), curves, images, spec))
    return reports


def _run_line(rec: RunDetail) -> str:
    from workbench.store.queries import iso

    return (
        f"{rec.kind}, experiment {rec.experiment}; {rec.label}, attempt {rec.attempt}, device "
        f"{rec.device or '-'}; started {iso(rec.started_at) or '-'}, finished {iso(rec.finished_at) or '-'}"
    )


def _layout(store, run_ids: list[int], page) -> list[str]:
    """The report's parts, in order, each written by `page` (an HtmlPage or a MarkdownPage): per run a
    heading, a line about it, its error, summary, tables, curves, images and spec."""
    parts = []
    for r in run_reports(store, run_ids):
        rec = r.record
        parts.append(
            page.heading(2, f"run {rec.id}: {rec.name}", anchor=f"run{rec.id}") + page.para(_run_line(rec))
        )
        if rec.error:
            parts.append(page.para(rec.error, lead="error:"))
        if r.summary:
            parts.append(
                page.heading(3, "summary")
                + page.table([{"key": k, "value": v} for k, v in r.summary.items()])
            )
        for name, rows in rec.tables.items():
            parts.append(page.heading(3, f"{name} ({len(rows)} rows)") + page.table(rows))
        for name, figures in (("curves", r.curves), ("images", r.images)):
            if figures:
                parts.append(page.heading(3, name) + "".join(page.figure(rec.id, f) for f in figures))
        parts.append(page.heading(3, "spec") + page.code(r.spec, "yaml"))
    return parts


NOT_SHOWN = f"missing, or over {MAX_EMBEDDED_IMAGE >> 20} MiB"


class HtmlPage:
    """HTML pieces for _layout: every outside value escaped, pictures as data URIs."""

    @staticmethod
    def esc(value: Any, keep: str = "") -> str:
        import html

        return html.escape(printable(value, keep) if isinstance(value, str) else cell(value))

    def heading(self, level: int, text: str, anchor: str = "") -> str:
        return f"<h{level}{f' id={anchor!r}' if anchor else ''}>{self.esc(text)}</h{level}>"

    def para(self, text: str, lead: str = "") -> str:
        return f"<p>{f'<b>{lead}</b> ' if lead else ''}{self.esc(text)}</p>"

    def table(self, rows: list[dict[str, Any]]) -> str:
        rows = readable_rows(rows)
        cols = _columns(rows)
        head = "".join(f"<th>{self.esc(c)}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{self.esc(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def figure(self, run_id: int, f: Figure) -> str:
        import base64

        if f.png is None:
            return self.para(f"{f.caption}: not embedded ({NOT_SHOWN})")
        return (
            f"<figure><img alt='{self.esc(f.name)}' src='data:image/png;base64,{base64.b64encode(f.png).decode()}'>"
            f"<figcaption>{self.esc(f.caption)}</figcaption></figure>"
        )

    def code(self, text: str, _language: str) -> str:
        return f"<pre>{self.esc(text, keep=chr(10))}</pre>"


def html_report(store, run_ids: list[int], title: str) -> str:
    """One self-contained HTML page for `run_ids`: per run its spec, summary and result tables (every
    estimate as `mean [low, high]`), its curves and the newest of each of its images, embedded as data
    URIs: copy the one file to a laptop and open it. The page runs no script and loads nothing (its
    Content-Security-Policy says so), so names and values from a run cannot act in the browser."""
    page = HtmlPage()
    body = page.heading(1, title) + "".join(_layout(store, run_ids, page))
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">"
        f"<meta name='viewport' content='width=device-width'><title>{page.esc(title)}</title>"
        f"<style>{PAGE_STYLE}</style></head><body>{body}</body></html>\n"
    )


def md_text(value: Any) -> str:
    """A value as Markdown text that shows as written and does nothing: no HTML (`<` `>` `&` as entities),
    no emphasis or code (`*` `` ` `` `~` escaped), no table break (`|`), no link (`](` broken)."""
    text = printable(value) if isinstance(value, str) else cell(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"([\\`*~|])", r"\\\1", text)
    return text.replace("](", "]\\(")


class MarkdownPage:
    """Markdown pieces for _layout: outside text through md_text; each picture kept in `files` and
    linked as `folder/<file>.png`."""

    def __init__(self, folder: str):
        self.folder = folder
        self.files: dict[str, bytes] = {}

    def heading(self, level: int, text: str, anchor: str = "") -> str:
        return f"{'#' * level} {md_text(text)}\n\n"

    def para(self, text: str, lead: str = "") -> str:
        return f"{f'**{lead}** ' if lead else ''}{md_text(text)}\n\n"

    def table(self, rows: list[dict[str, Any]]) -> str:
        rows = readable_rows(rows)
        cols = _columns(rows)
        lines = [
            "| " + " | ".join(md_text(c) for c in cols) + " |",
            "|" + "|".join("---" for _ in cols) + "|",
        ]
        lines += ["| " + " | ".join(md_text(row.get(c)) for c in cols) + " |" for row in rows]
        return "\n".join(lines) + "\n\n"

    def figure(self, run_id: int, f: Figure) -> str:
        if f.png is None:
            return self.para(f"{f.caption}: not included ({NOT_SHOWN})")
        name = _unused(Path(f"run{run_id}-{file_part(f.name)}.png"), [Path(n) for n in self.files]).name
        self.files[name] = f.png
        return f"![{md_text(f.name)}]({self.folder}/{name})\n\n*{md_text(f.caption)}*\n\n"

    def code(self, text: str, language: str) -> str:
        fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
        return f"{fence}{language}\n{printable(text, keep=chr(10))}{fence}\n\n"


def markdown_report(store, run_ids: list[int], title: str, folder: str) -> tuple[str, dict[str, bytes]]:
    """A Markdown page for `run_ids` and its pictures: the page links each as `folder/<file>.png`
    (the caller writes them there, beside the page). The same content as html_report."""
    page = MarkdownPage(folder)
    return page.heading(1, title) + "".join(_layout(store, run_ids, page)), page.files


# --- live status ------------------------------------------------------------------------------------


def clock(seconds: float) -> str:
    """`0:42`, `12:05`, `3:04:10`."""
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def status_line(progress: tuple[int, int], phase: Any, now: float) -> str:
    """Where a running run is: `sampling 3/6, 1:02 in, about 0:40 left` (the phase's own progress and
    the time since it began; the rest by the pace so far, once a unit is done). Without a phase, the
    progress alone."""
    done, total = progress
    counted = f"{done}/{total}" if total else ""
    if phase is None:
        return counted
    elapsed = now - phase.since
    text = f"{printable(phase.name)} {counted}".rstrip() + f", {clock(elapsed)} in"
    if total and 0 < done < total:
        text += f", about {clock(elapsed / done * (total - done))} left"
    return text


def phase_cell(progress: tuple[int, int], phase: Any, now: float) -> str:
    """status_line for a table cell: `sampling 3/6, 0:40 left` (the phase, its progress, the time left)."""
    done, total = progress
    text = f"{printable(phase.name)} {done}/{total}" if total else printable(phase.name)
    if total and 0 < done < total:
        text += f", {clock((now - phase.since) / done * (total - done))} left"
    return text


# --- comparing runs ---------------------------------------------------------------------------------


def shown_status(record: Any, waiting: str | None) -> str:
    """The run's status as a person reads it (`record.label`), a queued run's with what it waits for
    when every live worker waits on a device another worker holds (queue.queued_because)."""
    if waiting and record.label == RunStatus.QUEUED:
        return f"queued ({waiting})"
    return str(record.label)


def resources_line(latest: dict[str, float]) -> str:
    """`CPU 184 % of a core, 1.3 GB; GPU 87 %, 12.1 GB` from a run's newest jobs.resources samples ('' when
    none)."""
    from workbench.jobs.resources import CPU, GPU, GPU_MEMORY, MEMORY

    parts = []
    if CPU in latest:
        parts.append(
            f"CPU {latest[CPU]:.0f} % of a core" + (f", {latest[MEMORY]:.1f} GB" if MEMORY in latest else "")
        )
    if GPU in latest or GPU_MEMORY in latest:
        gpu = [f"{latest[GPU]:.0f} %"] if GPU in latest else []
        gpu += [f"{latest[GPU_MEMORY]:.1f} GB"] if GPU_MEMORY in latest else []
        parts.append("GPU " + ", ".join(gpu))
    return "; ".join(parts)


def spec_differences(records: list[RunDetail]) -> list[dict[str, Any]]:
    """One row per dotted spec field whose value is not the same in every run: {field, run A, run B}."""
    flat = {r.id: _dotted(r.spec or {}) for r in records}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    rows = []
    for k in keys:
        values = [flat[r.id].get(k) for r in records]
        if any(v != values[0] for v in values):
            rows.append({"field": k, **{f"run {r.id}": json.dumps(flat[r.id].get(k)) for r in records}})
    return rows


def metric_comparison(records: list[RunDetail], baseline: int = 0) -> list[dict[str, Any]]:
    """Metrics as rows and runs as columns: every summary value (estimates as `mean [low, high]`), then
    each other run minus the baseline run (`records[baseline]`). The difference gets an interval where
    both runs have one: the runs are independent draws, so the half-widths add in quadrature (a normal
    approximation; a paired comparison within one run, where a kind makes one, is tighter)."""
    base = records[baseline]
    summaries = {r.id: flatten(r.summary or {}) for r in records}
    interval_columns = {
        name for s in summaries.values() for key in s for name in Estimate.column_names(key) if name != key
    }
    keys = [k for k in dict.fromkeys(k for s in summaries.values() for k in s) if k not in interval_columns]
    rows = []
    for key in keys:
        row: dict[str, Any] = {"metric": key}
        for r in records:
            est = Estimate.from_columns(summaries[r.id], key)
            row[f"run {r.id}"] = estimate_cell(est) if est is not None else summaries[r.id].get(key)
        b = summaries[base.id].get(key)
        for r in records:
            if r.id == base.id:
                continue
            v = summaries[r.id].get(key)
            if not (_is_number(v) and _is_number(b)):
                row[f"run {r.id} - run {base.id}"] = None
                continue
            e1, e0 = (
                Estimate.from_columns(summaries[r.id], key),
                Estimate.from_columns(summaries[base.id], key),
            )
            diff = float(v) - float(b)
            if e1 is not None and e0 is not None and e1.has_interval and e0.has_interval:
                half = math.hypot((e1.high - e1.low) / 2, (e0.high - e0.low) / 2)
                row[f"run {r.id} - run {base.id}"] = (
                    f"{cell(diff)} [{cell(diff - half)}, {cell(diff + half)}]"
                )
            else:
                row[f"run {r.id} - run {base.id}"] = diff
        rows.append(row)
    return rows


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

"""The import rules of the house, read from the source (AST) and checked in fresh interpreters:

- one namespace: every module of the product lives under `workbench.` (a user's own `jobs/` or
  `store/` package can never be imported in its place);
- store <- jobs <- the rest: workbench.store imports neither workbench.jobs nor the CLI/TUI, and
  workbench.jobs imports nothing of the CLI/TUI;
- kinds never import kinds (what they share lives in the library: jobs.diffusion, jobs.metrics, ...), and
  reach the store only through their RunContext (never workbench.store, never `ctx.store`);
- screens never import screens (the app opens them) and each screen module imports on its own;
- no SQL outside workbench/store/: the TUI asks store.queries and store.queue, a run's writes go through
  store.run_writer, and nothing else imports SQLAlchemy.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import ROOT

PACKAGE = ROOT / "workbench"
SCREENS = PACKAGE / "tui" / "screens"
JOBS, STORE = PACKAGE / "jobs", PACKAGE / "store"
UPPER = (
    "workbench.cli",
    "workbench.tui",
    "workbench.factory",
    "workbench.styles",
    "workbench.report",
    "workbench.__main__",
)


def imports_of(path, package: str | None = None) -> set[str]:
    """Every module a file imports, at any depth (function-local imports included); a relative import
    is resolved against the file's package (by default, where the file sits under ROOT)."""
    package = package or ".".join(path.relative_to(ROOT).parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = (
                ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            )
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names |= {f"{module}.{a.name}" for a in node.names}
    return names


def modules(folder) -> list:
    return [p for p in sorted(folder.glob("*.py")) if p.name != "__init__.py"]


def test_imports_of_sees_every_form(tmp_path):
    """The guards below are only as good as this reader: local, aliased and relative imports count."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from .runs import RunsScreen\n    import workbench.tui.screens.queue as q\n"
        "from .. import live\n"
    )
    found = imports_of(probe, "workbench.tui.screens")
    assert {"workbench.tui.screens.runs", "workbench.tui.screens.queue", "workbench.tui.live"} <= found


def test_kinds_never_import_kinds():
    kinds = modules(JOBS / "kinds")
    assert len(kinds) >= 7  # the guard reads the real folder (it once read none, and passed)
    for path in kinds:
        others = {m for m in imports_of(path) if m.startswith("workbench.jobs.kinds")}
        assert not others, f"{path.name} imports {sorted(others)}: move what it shares into the library"


def test_kinds_reach_the_store_only_through_their_context():
    """A kind (and the library it uses) never imports workbench.store nor reads the context's store: caches
    come from ctx.cache_dir, its earlier files from ctx.own_file, other runs from ctx.finished_run."""
    files = [
        *modules(JOBS / "kinds"),
        *(JOBS / "diffusion").rglob("*.py"),
        *(JOBS / "data").rglob("*.py"),
        *(JOBS / "metrics").rglob("*.py"),
        JOBS / "classify.py",
        JOBS / "figures.py",
    ]
    assert len(files) >= 22
    for path in files:
        bad = {m for m in imports_of(path) if m.startswith("workbench.store")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: ask the run's context"
        reads = [
            node.lineno
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and node.attr in ("store", "_store")
        ]
        assert not reads, f"{path.relative_to(ROOT)} reads a store at lines {reads}: ask the run's context"


def test_the_library_never_imports_kinds():
    """diffusion, data, metrics, classify and figures serve every kind; a kind is never their dependency."""
    library = [
        *(JOBS / "diffusion").rglob("*.py"),
        *(JOBS / "data").rglob("*.py"),
        *(JOBS / "metrics").rglob("*.py"),
    ]
    library += [JOBS / "classify.py", JOBS / "figures.py"]
    assert len(library) >= 15
    for path in library:
        bad = {m for m in imports_of(path) if m.startswith("workbench.jobs.kinds")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_what_a_kind_imports_imports_no_kind():
    """Every kind imports jobs.spec (BaseSpec); the job-file loader that needs the kinds registry is
    jobs.jobfile, so the spec module never reaches back into the kinds."""
    bad = {m for m in imports_of(JOBS / "spec.py") if m.startswith("workbench.jobs.kinds")}
    assert not bad, f"jobs/spec.py imports {sorted(bad)}"


def test_data_never_imports_diffusion():
    """Diffusion trains on data; dataset and class names live in jobs.data.names, so data needs nothing back."""
    files = sorted((JOBS / "data").rglob("*.py"))
    assert len(files) >= 4
    for path in files:
        bad = {m for m in imports_of(path) if m.startswith("workbench.jobs.diffusion")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_backends_never_import_the_worker():
    """The worker (jobs.runner) imports the backends; a backend importing it back is a circle (device
    helpers live in jobs.devices)."""
    backends = sorted((JOBS / "backends").glob("*.py"))
    assert len(backends) >= 5
    for path in [*backends, JOBS / "devices.py"]:
        bad = {m for m in imports_of(path) if m == "workbench.jobs.runner"}
        assert not bad, f"{path.relative_to(ROOT)} imports the worker"


def test_every_import_of_the_product_is_under_one_namespace():
    """A bare `jobs`, `store` or relative-to-root import would pick up a user's own package of that name."""
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]
    for path in files:
        bare = {m for m in imports_of(path) if m.split(".")[0] in ("jobs", "store")}
        assert not bare, (
            f"{path.relative_to(ROOT)} imports {sorted(bare)}: use workbench.jobs / workbench.store"
        )
    assert not (ROOT / "jobs").exists() and not (ROOT / "store").exists()


def test_the_store_imports_neither_jobs_nor_the_interface():
    for path in sorted(STORE.glob("*.py")):
        bad = {m for m in imports_of(path) if m.startswith(("workbench.jobs", *UPPER))}
        assert not bad, f"store/{path.name} imports {sorted(bad)}"
    code = (
        "import sys, workbench.store.db, workbench.store.queries, workbench.store.queue, "
        "workbench.store.feeds, workbench.store.run_writer, workbench.store.artifacts; "
        "print(sorted(m for m in sys.modules if m.startswith(('workbench.jobs', 'workbench.cli', "
        "'workbench.tui', 'workbench.factory', 'workbench.report', 'matplotlib'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_jobs_import_nothing_of_the_interface():
    for path in sorted(JOBS.rglob("*.py")):
        bad = {m for m in imports_of(path) if m.startswith(UPPER)}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_screens_never_import_screens():
    for path in modules(SCREENS):
        others = {m for m in imports_of(path) if m.startswith("workbench.tui.screens")}
        assert not others, (
            f"{path.name} imports {sorted(others)}: share through tui/components or let the app open it"
        )


def test_no_sql_outside_the_store():
    for path in sorted(p for p in PACKAGE.rglob("*.py") if STORE not in p.parents):
        sql = {m for m in imports_of(path) if m.split(".")[0] in ("sqlalchemy", "sqlite3")}
        assert not sql, f"{path.relative_to(ROOT)} imports {sorted(sql)}: queries belong in store/"


def test_each_screen_module_imports_alone():
    """In a fresh interpreter each, so that no screen works only because another was imported first."""

    def load(path):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        return module, subprocess.run(
            [sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True
        )

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(load, [*modules(SCREENS), SCREENS / "__init__.py"]))
    assert len(results) >= 8
    failed = {m: r.stderr.strip().splitlines()[-1] for m, r in results if r.returncode}
    assert not failed, failed


def test_the_tui_reads_records_by_attribute_never_by_key():
    """`show()` gives a frozen RunDetail; a screen indexing a record by string (`rec["status"]`) was the
    old dict, whose keys no type checker could follow."""
    files = [*PACKAGE.joinpath("tui").rglob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)):
                continue
            target = node.value
            name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
            assert not (isinstance(node.slice.value, str) and name in ("rec", "record", "run", "detail")), (
                f"{path.relative_to(ROOT)}:{node.lineno} indexes a run record by string"
            )


def test_run_states_are_named_by_the_enum_not_by_string():
    """Catches `status == "failed"` (or `status="queued"`, `in ("succeeded", "lost")`) outside the enum's
    module and the schema's upgrades: a typo there compares false forever and no checker sees it."""
    from workbench.store.models import RunStatus

    states = {s.value for s in RunStatus} | {"lost"}
    allowed = {STORE / "models.py", STORE / "schema.py"}
    for path in sorted(set(PACKAGE.rglob("*.py")) - allowed):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                operands += [
                    e for o in operands if isinstance(o, ast.Tuple | ast.List | ast.Set) for e in o.elts
                ]
            elif isinstance(node, ast.keyword) and node.arg == "status":
                operands = [node.value]
            else:
                continue
            literal = [o.value for o in operands if isinstance(o, ast.Constant) and o.value in states]
            assert not literal, (
                f"{path.relative_to(ROOT)}:{node.lineno} names a run state {literal} by string"
            )


LAYERS = (  # lowest first: a module may import its own layer and those below, never one above
    ("workbench.text",),
    ("workbench.store",),
    ("workbench.jobs",),
    ("workbench.report", "workbench.styles"),
    ("workbench.cli", "workbench.tui", "workbench.factory", "workbench.__main__"),
)


def import_graph() -> dict[str, set[str]]:
    """{module: the product's modules it imports}, every import at any depth (function-local too)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {m for m in imports_of(path, package) if m in names and m != name}
    return graph


def test_the_import_graph_has_no_circle_and_no_arrow_up():
    graph = import_graph()
    assert len(graph) > 80 and graph["workbench.cli"], "the graph reads the real package"
    # a circle: depth-first search, a module met again while still on the path
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph[module]):
            assert state.get(other) != 1, "import circle: " + " -> ".join([*path, module, other])
            if other not in state:
                visit(other, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])

    def layer(module: str) -> int:
        return (
            next(i for i, names in enumerate(LAYERS) if module.startswith(names))
            if module != "workbench"
            else 0
        )

    for module, imported in graph.items():
        for other in imported:
            assert layer(other) <= layer(module), (
                f"{module} (layer {layer(module)}) imports {other} (layer {layer(other)})"
            )

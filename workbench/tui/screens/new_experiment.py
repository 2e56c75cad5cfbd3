"""New experiment: start from a kind's template (or a file), edit the YAML, see errors live, submit."""

from __future__ import annotations

from pathlib import Path

import yaml
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Select, Static, TextArea
from textual.worker import get_current_worker

from workbench.jobs.jobfile import SpecError, load_job, read_spec_file, resolve
from workbench.jobs.kinds import kind_names, load_kind
from workbench.store import queue
from workbench.text import printable
from workbench.tui.live import KeysFirstScreen
from workbench.tui.messages import JobSubmitted, Notice, SpecChecked

VALIDATE_DELAY = 0.3


def template(kind: str, preset: str) -> str:
    """A complete spec for `kind` at `preset`: every field with its value, ready to edit."""
    spec = resolve(load_kind(kind).Spec, {"kind": kind, "preset": preset})
    body = spec.model_dump(mode="json", exclude={"kind", "name", "preset", "sweep"})
    head = {"kind": kind, "name": f"my-{kind}", "preset": preset}
    return (
        yaml.safe_dump(head, sort_keys=False)
        + yaml.safe_dump(body, sort_keys=False)
        + "# sweep:            # one run per combination, e.g.\n#   seed: [0, 1, 2]\n"
    )


class NewExperimentScreen(KeysFirstScreen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+s", "submit", "Submit"),
        Binding("ctrl+o", "load", "Load file"),
        Binding("ctrl+t", "template", "Template"),
        Binding("f8", "goto_error", "Go to error"),
    ]

    def __init__(self):
        super().__init__()
        self.problems: list[str] = []
        self.error_lines: list[int] = []
        self.base_dir: Path | None = None  # a loaded file's folder: its relative data paths start there
        self._timer = None
        self.submitting = False
        self.pristine = ""  # the text as the template or the loaded file gave it: edits differ from it

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="new-controls"):
            yield Select(
                [(k, k) for k in kind_names()],
                value="ddpm" if "ddpm" in kind_names() else kind_names()[0],
                allow_blank=False,
                id="kind",
            )
            yield Select(
                [("smoke", "smoke"), ("paper", "paper")], value="smoke", allow_blank=False, id="preset"
            )
        yield TextArea(
            template("ddpm" if "ddpm" in kind_names() else kind_names()[0], "smoke"),
            id="editor",
            show_line_numbers=True,
            tab_behavior="indent",
        )
        yield Static("", id="errors")
        yield Footer()

    def on_mount(self) -> None:
        self.pristine = self.query_one("#editor", TextArea).text
        self.sub_title = "new experiment"
        self.query_one("#editor", TextArea).focus()
        self.validate_now()

    def edits(self) -> bool:
        return self.query_one("#editor", TextArea).text != self.pristine and not self.submitting

    def action_back(self) -> None:
        """Leave; with edits not submitted, only when asked twice (Esc, Esc)."""
        if not self.edits() or self.app.confirmed("leave the editor and drop your edits"):
            self.app.pop_screen()

    @on(Select.Changed, "#kind")
    @on(Select.Changed, "#preset")
    def choice_changed(self) -> None:
        if self.edits():  # a new kind or preset never overwrites what was typed
            self.notify("your edits are kept; ctrl+t twice replaces them with the chosen template")
            return
        self.action_template(force=True)

    def action_template(self, force: bool = False) -> None:
        if not force and self.edits() and not self.app.confirmed("replace your edits with the template"):
            return
        kind, preset = (
            str(self.query_one("#kind", Select).value),
            str(self.query_one("#preset", Select).value),
        )
        self.base_dir = None
        self.pristine = template(kind, preset)
        self.query_one("#editor", TextArea).text = self.pristine

    @on(TextArea.Changed, "#editor")
    def edited(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(VALIDATE_DELAY, self.validate_now)

    def validate_now(self) -> None:
        self.check(self.query_one("#editor", TextArea).text)

    @work(thread=True, exclusive=True, group="validate")
    def check(self, text: str) -> None:
        worker = get_current_worker()
        try:
            job = load_job(text, "spec", base_dir=self.base_dir)
            message = SpecChecked([], f"valid: {job.kind}, {len(job.runs)} run(s)  (ctrl+s submits)")
        except SpecError as e:
            message = SpecChecked(e.problems, None)
        if not worker.is_cancelled:  # a newer edit's check took over
            self.post_message(message)

    def on_spec_checked(self, message: SpecChecked) -> None:
        self.show_problems(message.problems, message.ok)

    def show_problems(self, problems: list[str], ok: str | None) -> None:
        self.problems = problems
        self.error_lines = []
        for p in problems:  # "spec:12: field: message" -> line 12
            head = p.split(":", 2)
            if len(head) > 2 and head[1].strip().isdigit():
                self.error_lines.append(int(head[1]))
        errors = self.query_one("#errors", Static)
        errors.set_class(ok is not None, "ok")
        errors.update(Text(ok if ok else "\n".join(p.replace("spec:", "line ", 1) for p in problems)))

    def action_goto_error(self) -> None:
        if self.error_lines:
            editor = self.query_one("#editor", TextArea)
            editor.move_cursor((self.error_lines[0] - 1, 0))
            editor.focus()

    def action_load(self) -> None:
        def loaded(path: str | None) -> None:
            if not path:
                return
            try:
                text = read_spec_file(Path(path).expanduser())
            except SpecError as e:
                self.notify(printable(str(e)), severity="error", markup=False)
                return
            self.base_dir = Path(path).expanduser().resolve().parent
            self.pristine = text
            self.query_one("#editor", TextArea).text = text

        self.app.ask("Load a spec file (path):", loaded, "examples/quickstart.yaml")

    def action_submit(self) -> None:
        text = self.query_one("#editor", TextArea).text
        try:
            job = load_job(text, "spec", base_dir=self.base_dir)
        except SpecError as e:
            self.show_problems(e.problems, None)
            self.notify("the spec has errors; nothing was submitted", severity="error")
            return
        if self.submitting:
            return  # the first ctrl+s is still on its way to the store
        self.submitting = True
        self.submit(job)

    @work(thread=True, group="submit")
    def submit(self, job) -> None:
        """The store write (and starting a worker) off the UI thread: a locked database delays the
        submission, never the interface."""
        try:
            exp_id, run_ids = queue.submit(
                self.app.store,
                name=job.name,
                kind=job.kind,
                spec_text=job.text,
                sweep=job.sweep,
                runs=[queue.NewRun(n, s.model_dump(mode="json")) for n, s in job.runs],
            )
        except Exception as e:  # noqa: BLE001 - a store fault: the spec stays in the editor
            self.post_message(JobSubmitted(None, [], f"not submitted: the store refused it ({e})"))
            return
        self.post_message(JobSubmitted(exp_id, run_ids))
        if self.app.auto_worker:
            from workbench.jobs.runner import ensure_worker

            try:
                ensure_worker(self.app.store)
            except Exception as e:  # noqa: BLE001 - queued all the same: `workbench worker` runs them
                self.post_message(Notice(f"queued, but no worker started: {e}", "warning"))

    def on_job_submitted(self, message: JobSubmitted) -> None:
        self.submitting = False
        if message.error:
            self.notify(printable(message.error), severity="error", markup=False)
            return
        self.notify(
            f"experiment {message.experiment_id}: queued run(s) {', '.join(map(str, message.run_ids))}"
        )
        self.app.pop_screen()

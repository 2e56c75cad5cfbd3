"""`workbench report`: one self-contained HTML page per run or experiment, checked in a real headless
browser (Debian's `chromium`): every image loads from the page itself, no script runs, every estimate
reads `mean [low, high]`, and text from a run (names, spec values, table cells) stays text."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from tests.conftest import write_spec
from workbench.jobs.context import RunContext
from workbench.store import queue

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>\x1b]0;title\x07"

# Loads the report in a frame, waits for its images, and writes what it found into its own body, which
# --dump-dom prints. The report itself runs no script (its CSP forbids them); this page only reads it.
HARNESS = """<!doctype html><html><body><iframe id="f" src="report.html" width="1200" height="900"></iframe>
<script>
const f = document.getElementById('f');
f.onload = () => {
  const d = f.contentDocument, imgs = [...d.images];
  const wait = () => {
    if (!imgs.every(i => i.complete)) return setTimeout(wait, 50);
    const found = {
      images: imgs.length,
      loaded: imgs.filter(i => i.naturalWidth > 0).length,
      external: imgs.filter(i => !i.src.startsWith('data:image/png;base64,')).length,
      scripts: d.querySelectorAll('script').length,
      tables: d.querySelectorAll('table').length,
      text: d.body.innerText,
    };
    document.body.setAttribute('data-found', JSON.stringify(found));
  };
  wait();
};
</script></body></html>"""


def browse(folder) -> dict:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    (folder / "harness.html").write_text(HARNESS)
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--virtual-time-budget=10000", "--dump-dom", (folder / "harness.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r'data-found="([^"]*)"', out.stdout)
    assert found, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def claimed_with_results(store, run_id: int, text: str) -> RunContext:
    """The run claimed, with a loss curve, a summary estimate, and `text` in its summary and a table."""
    queue.claim(store, "w", "cpu")
    ctx = RunContext(store, run_id)
    for step in range(5):
        ctx.log(step, loss=1.0 / (step + 1))
    ctx.flush()
    ctx.summary(top1=0.9123, top1_ci=[0.9012, 0.9234], top1_n=400, note=text)
    ctx.table(
        "per_class",
        [{"class": text, "accuracy_mean": 0.8, "accuracy_ci_low": 0.7, "accuracy_ci_high": 0.9}],
    )
    return ctx


def test_the_report_of_an_experiment_loads_whole_in_a_browser_and_runs_nothing(store, cli, tmp_path):
    spec = write_spec(tmp_path, "kind: sleep\nname: exp\nsweep:\n  seed: [1, 2]\n")
    ids = json.loads(cli("submit", spec, "--no-worker", "--json")[1])["run_ids"]
    for rid in ids:
        ctx = claimed_with_results(store, rid, HOSTILE)
        ctx.image("samples/grid", 5, np.full((8, 8), 0.5))
        ctx.image("samples/grid", 9, np.full((8, 8), 0.25))  # the newest of a name is shown
        queue.finish(store, rid, "w", "succeeded")
    folder = tmp_path / "page"
    folder.mkdir()
    code, _, err = cli("report", "exp", "-o", folder / "report.html")
    assert code == 0, err
    found = browse(folder)
    # per run: one curve (loss) and one image (the newest grid), each a data URI that decodes
    assert (found["images"], found["loaded"], found["external"], found["scripts"]) == (4, 4, 0, 0)
    assert found["tables"] == 4  # a summary and a per_class table per run
    text = found["text"]
    assert "0.9123 [0.9012, 0.9234] n=400" in text and "0.8 [0.7, 0.9]" in text
    assert "<script>alert(1)</script>" in text  # shown as text, never parsed
    assert "\x1b" not in text and "\\x1b" in text
    assert f"run {ids[0]}: exp seed=1" in text and "seed: 2" in text and "@ step 9" in text


def test_report_refuses_what_it_cannot_write_or_find(store, cli, tmp_path):
    code, _, err = cli("report", "nosuch", "-o", tmp_path / "r.html")
    assert code == 2 and "neither a run id nor an experiment" in err
    code, _, err = cli("report", "12", "-o", tmp_path / "r.html")
    assert code == 2 and "12" in err
    (tmp_path / "r.html").write_text("keep me")
    spec = write_spec(tmp_path, "kind: sleep\n")
    (rid,) = json.loads(cli("submit", spec, "--no-worker", "--json")[1])["run_ids"]
    code, _, err = cli("report", str(rid), "-o", tmp_path / "r.html")
    assert code == 2 and "--force" in err and (tmp_path / "r.html").read_text() == "keep me"
    code, _, err = cli("report", str(rid), "-o", tmp_path / "no" / "r.html")
    assert code == 2 and "no folder" in err


def test_a_markdown_report_keeps_its_pictures_beside_it_and_hostile_text_inert(store, cli, tmp_path):
    """`-o page.md`: the page and page_files/ with a PNG per curve and per image, each linked by a path
    that exists; rendered by a CommonMark renderer (markdown-it, as editors and forges do), hostile text
    from a run makes no HTML element, no link and no emphasis, and estimates read `mean [low, high]`.
    A second write needs --force, and never deletes a folder holding anything but a report's pictures.
    Seen red with md_text escaping nothing (a <script> element and a link appeared)."""
    from markdown_it import MarkdownIt

    hostile = HOSTILE + " [click](http://evil.example) *loud* `code` a|b"
    spec = write_spec(tmp_path, "kind: sleep\nname: exp\n")
    (rid,) = json.loads(cli("submit", spec, "--no-worker", "--json")[1])["run_ids"]
    ctx = claimed_with_results(store, rid, hostile)
    ctx.image("samples/grid", 9, np.full((8, 8), 0.25))
    ctx.image("evil [x](javascript:alert(1)) <img src=x onerror=alert(2)> *loud*", None, np.full((8, 8), 0.5))
    queue.finish(store, rid, "w", "succeeded")
    page = tmp_path / "page.md"
    code, _, err = cli("report", str(rid), "-o", page)
    assert code == 0, err
    text = page.read_text()
    rendered = MarkdownIt("commonmark").render(text)
    linked = re.findall(r'<img src="([^"]+)"', rendered)
    assert len(linked) == 3 and all((tmp_path / src).is_file() for src in linked), linked  # loss, 2 images
    assert sorted(p.name for p in (tmp_path / "page_files").iterdir()) == sorted(
        src.split("/")[1] for src in linked
    )
    assert "<script" not in rendered and "<a " not in rendered and "<em>loud" not in rendered
    assert len(re.findall(r"<img ", rendered)) == 3 and "&lt;img src=x onerror=alert(2)&gt;" in rendered
    assert "0.9123 [0.9012, 0.9234] n=400" in rendered and "0.8 [0.7, 0.9]" in rendered
    assert "\x1b" not in text
    code, _, err = cli("report", str(rid), "-o", page)
    assert code == 2 and "--force" in err
    (tmp_path / "page_files" / "notes.txt").write_text("mine")
    code, _, err = cli("report", str(rid), "-o", page, "--force")
    assert (
        code == 2
        and "more than a report's pictures" in err
        and (tmp_path / "page_files" / "notes.txt").exists()
    )
    (tmp_path / "page_files" / "notes.txt").unlink()
    code, _, err = cli("report", str(rid), "-o", page, "--force")
    assert code == 0, err
    code, _, err = cli("report", str(rid), "-o", tmp_path / "page.txt")
    assert code == 2 and ".html or .md" in err

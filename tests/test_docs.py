"""The documentation site: it builds with ``mkdocs build --strict``, and every
```python example in docs/*.md runs as it is written.

A block preceded by the line ``<!-- no-run -->`` is a fragment that cannot run
alone (it needs a server, or the surrounding app); every other block is run in
its own subprocess, in a fresh temporary directory (so ``Scheduler("floodgate.db")``
is a temporary SQLite backlog), and must exit 0.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NO_RUN = "<!-- no-run -->"
EXAMPLE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Example:
    page: str
    line: int  # of the opening fence, 1-based
    code: str
    runs: bool

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def python_blocks(page: str, text: str) -> list[Example]:
    """The ```python blocks of one page; a block right after ``<!-- no-run -->``
    (blank lines between are allowed) does not run."""
    examples: list[Example] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):  # bounded: i grows every pass
        if lines[i].strip() == "```python":
            start = i
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise ValueError(f"{page}:{start + 1}: unclosed ```python block")
            before = start - 1
            while before >= 0 and not lines[before].strip():
                before -= 1
            runs = before < 0 or lines[before].strip() != NO_RUN
            examples.append(Example(page, start + 1, "\n".join(body) + "\n", runs))
        i += 1
    return examples


def doc_examples() -> list[Example]:
    return [
        example
        for path in sorted(DOCS.glob("*.md"))
        for example in python_blocks(path.name, path.read_text(encoding="utf-8"))
    ]


EXAMPLES = doc_examples()
RUNNABLE = [e for e in EXAMPLES if e.runs]


def test_the_marker_skips_only_the_block_right_after_it() -> None:
    text = "\n".join(
        [
            "```python",
            "print(1)",
            "```",
            NO_RUN,
            "",
            "```python",
            "fragment(",
            "```",
            "text",
            "```python",
            "print(3)",
            "```",
            "```sh",
            "echo no",
            "```",
        ]
    )
    found = python_blocks("x.md", text)
    assert [(e.line, e.code, e.runs) for e in found] == [
        (1, "print(1)\n", True),
        (6, "fragment(\n", False),
        (10, "print(3)\n", True),
    ]
    with pytest.raises(ValueError, match="unclosed"):
        python_blocks("x.md", "```python\nprint(1)\n")


def test_most_examples_run_and_every_page_has_the_marker_only_for_fragments() -> None:
    assert len(RUNNABLE) >= 10, [e.id for e in EXAMPLES]
    skipped = [e for e in EXAMPLES if not e.runs]
    assert len(skipped) <= len(EXAMPLES) // 4, [e.id for e in skipped]
    # A page that teaches the API shows it working: each has a runnable example.
    for page in ("index.md", "lanes.md", "durable.md", "outages.md", "workers.md"):
        assert any(e.page == page for e in RUNNABLE), page


def example_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("FLOODGATE_BACKLOG", None)
    return env


@pytest.mark.parametrize("example", RUNNABLE, ids=[e.id for e in RUNNABLE])
@pytest.mark.timeout(EXAMPLE_TIMEOUT + 30)
def test_doc_example_runs(example: Example, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(example.code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path,
        env=example_env(),
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (
        f"{example.id} exited {done.returncode}\n--- stdout\n{done.stdout}\n"
        f"--- stderr\n{done.stderr}"
    )
    shown = (done.stdout + done.stderr).strip()  # logs go to stderr
    assert shown, f"{example.id} printed nothing: an example shows its result"


@pytest.mark.timeout(300)
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (the docs extra: pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # The pictures are published beside the pages that show them ...
    assert (site / "drill-blip.png").stat().st_size > 0
    assert (site / "dashboard.png").stat().st_size > 0
    # ... and the reference is generated from the docstrings.
    reference = (site / "reference" / "index.html").read_text(encoding="utf-8")
    for text in ("Scheduler", "submit_many", "Store one durable job per item", "Overloaded"):
        assert text in reference, text

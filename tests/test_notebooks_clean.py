"""Chapter notebooks are stored clean and follow the book's conventions.

* no outputs, no execution counts, no saved widget state (the book build produces all outputs);
* the first cell is a markdown title; a chapter ``book/NN_topic.ipynb`` is titled ``# N. Title``
  (the toc does not number chapters, so the title carries the number);
* exactly one code cell tagged ``parameters``, holding only assignments to UPPERCASE names
  (the quick-mode knobs a reader may change);
* a ``python3`` kernelspec, so the build and Binder/Colab start the right kernel;
* ``_toc.yml`` and ``book/`` agree: every listed file exists, every notebook is listed, and the
  numbered chapters ``book/NN_topic.ipynb`` appear in order.

To clean a notebook: ``jupyter nbconvert --clear-output --inplace book/NN_topic.ipynb`` (and in
JupyterLab turn off Settings > "Save Widget State Automatically").
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
BOOK = REPO_ROOT / "book"
NAME_RE = re.compile(r"^(\d{2}|appendix)_[a-z0-9]+(_[a-z0-9]+)*\.ipynb$")
UPPER_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _book_notebooks() -> list[Path]:
    """Notebooks under book/ that are present, plus tracked ones (which must then be present)."""
    found = {p for p in BOOK.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts}
    try:
        tracked = subprocess.run(["git", "ls-files", "--", "book/*.ipynb", "book/**/*.ipynb"], cwd=REPO_ROOT,
                                 capture_output=True, text=True, timeout=30, check=True).stdout.split()
        found |= {REPO_ROOT / t for t in tracked}
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout: the working tree is all there is
    return sorted(found)


NOTEBOOKS = _book_notebooks()


def _toc_files() -> list[str]:
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)

    walk(toc)
    return files


def _resolve(entry: str) -> Path | None:
    """The source file of a toc entry (written without or with its suffix)."""
    base = REPO_ROOT / entry
    if base.suffix in (".ipynb", ".md") and base.is_file():
        return base
    for suffix in (".ipynb", ".md"):
        if base.with_suffix(suffix).is_file():
            return base.with_suffix(suffix)
    return None


def _rel(p: Path) -> str:
    return p.relative_to(REPO_ROOT).as_posix()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_rel)
def test_notebook_is_clean(path: Path):
    assert path.is_file(), f"{_rel(path)} is tracked by git but missing from the working tree"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    name = _rel(path)

    dirty = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            if cell.get("outputs"):
                dirty.append(f"cell {i}: has outputs")
            if cell.get("execution_count") is not None:
                dirty.append(f"cell {i}: execution_count={cell.execution_count}")
    if "widgets" in nb.metadata:
        dirty.append("notebook metadata has saved widget state ('widgets')")
    assert not dirty, (f"{name} is not clean (run `jupyter nbconvert --clear-output --inplace {name}`):\n  "
                       + "\n  ".join(dirty))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_rel)
def test_notebook_structure(path: Path):
    nb = nbformat.read(path, as_version=4)
    name = _rel(path)

    assert NAME_RE.match(path.name), f"{name}: chapter notebooks are named book/NN_topic.ipynb (snake_case)"
    assert path.parent == BOOK, f"{name}: chapter notebooks live directly in book/"

    kernel = nb.metadata.get("kernelspec", {}).get("name")
    assert kernel == "python3", f"{name}: metadata.kernelspec.name is {kernel!r}, expected 'python3'"

    assert nb.cells, f"{name} is empty"
    first = nb.cells[0]
    title = first.source.lstrip().splitlines()[0] if first.source.strip() else ""
    assert first.cell_type == "markdown" and re.match(r"^# \S", title), \
        f"{name}: the first cell must be a markdown cell starting with a '# Title' line"
    chapter = re.match(r"^(\d{2})_", path.name)
    if chapter:  # the toc does not number chapters: the title does, and must match the file
        number = int(chapter.group(1))
        assert re.match(rf"^# {number}\. \S", title), (
            f"{name}: the title must start with its chapter number, '# {number}. ...' (got {title!r})")

    params = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{name}: expected exactly one code cell tagged 'parameters', found {len(params)}"
    tree = ast.parse(params[0].source)
    assert tree.body, f"{name}: the parameters cell is empty"
    problems = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets = stmt.targets
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets = [stmt.target]
        else:
            problems.append(f"line {stmt.lineno}: only assignments belong here, not {type(stmt).__name__}")
            continue
        for target in targets:
            elts = target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
            for t in elts:
                if not (isinstance(t, ast.Name) and UPPER_RE.match(t.id)):
                    problems.append(f"line {stmt.lineno}: {ast.unparse(t)!r} is not an UPPERCASE name")
    assert not problems, f"{name}: parameters cell:\n  " + "\n  ".join(problems)


def test_toc_matches_book():
    files = _toc_files()
    missing = [f for f in files if _resolve(f) is None]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"

    listed = {_resolve(f) for f in files}
    unlisted = [_rel(p) for p in NOTEBOOKS if p not in listed]
    assert not unlisted, f"notebooks in book/ missing from _toc.yml (only toc files are built): {unlisted}"

    dupes = sorted({f for f in files if files.count(f) > 1})
    assert not dupes, f"_toc.yml lists these more than once: {dupes}"

    numbered = [Path(f).name for f in files if re.match(r"^\d{2}_", Path(f).name)]
    assert numbered == sorted(numbered), f"numbered chapters are out of order in _toc.yml: {numbered}"

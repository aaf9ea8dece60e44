"""The house's shape as a contract (shared/design/house.md): imports point down the layers only, no
module imports another's private name, every module declares ``__all__``, the top-level names import
without side effects, and the paper's settings are typed in one place."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "vqdbook"

#: Layer of every module (lower numbers are lower layers); a module may import its own layer or below.
LAYERS = {
    "paper": 0, "validation": 0, "provenance": 0,
    "metrics": 1, "data": 1, "parallel": 1,
    "kmeans": 2, "quantizers": 2,
    "models": 3, "defense": 3, "checks": 3,
    "train": 4, "attacks": 4, "square": 4, "kl": 4,
    "certify": 5,
    "results": 6, "experiments": 7,
    "plots": 8, "widgets": 9, "bench": 9, "cli": 10,
}
CORE_MAX = 5        # layers up to here are the core: no runner, record, plot, widget, CLI or benchmark


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = rel.parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield (".".join(parts) or "__init__"), path


def _imports(path: Path, modname: str):
    """(imported top-level vqdbook module, imported names) for every relative import in ``path``."""
    tree = ast.parse(path.read_text())
    pkg_parts = modname.split(".") if path.name != "__init__.py" else modname.split(".") + ["__init__"]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg_parts[: len(pkg_parts) - node.level]
            target = base + (node.module.split(".") if node.module else [])
            names = [a.name for a in node.names]
            if not target:                      # from . import x, y: each name is a module
                for n in names:
                    yield n, []
            else:
                yield target[0], names
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vqdbook."):
            yield node.module.split(".")[1], [a.name for a in node.names]


def _top(modname: str) -> str:
    return modname.split(".")[0]


@pytest.mark.parametrize("modname,path", list(_modules()), ids=[m for m, _ in _modules()])
def test_imports_point_down_and_are_public(modname, path):
    if modname == "__init__":
        return
    own = _top(modname)
    assert own in LAYERS, f"{modname}: add it to LAYERS in this test (which layer is it?)"
    for target, names in _imports(path, modname):
        if target in ("__init__", "__version__", "PROJECT_ROOT"):
            continue
        assert target in LAYERS, f"{modname} imports unknown module {target}"
        if target != own:
            assert LAYERS[target] <= LAYERS[own], f"{modname} (layer {LAYERS[own]}) imports {target} " \
                                                  f"(layer {LAYERS[target]}): imports must point down"
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{modname} imports private names {private} of {target}"


def test_core_imports_no_runner_record_plot_widget_cli_or_bench():
    face = {m for m, layer in LAYERS.items() if layer > CORE_MAX}
    for modname, path in _modules():
        if modname == "__init__" or LAYERS.get(_top(modname), 99) > CORE_MAX:
            continue
        bad = {t for t, _ in _imports(path, modname)} & face
        assert not bad, f"core module {modname} imports {sorted(bad)}"


@pytest.mark.parametrize("modname,path", list(_modules()), ids=[m for m, _ in _modules()])
def test_every_module_declares_all(modname, path):
    tree = ast.parse(path.read_text())
    names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
             if isinstance(t, ast.Name)}
    assert "__all__" in names, f"{modname} has no __all__"


def test_top_level_names_import_without_side_effects():
    code = ("import sys, vqdbook; assert 'torch' not in sys.modules, 'import vqdbook imported torch'; "
            "from vqdbook import RandDisc, PRD, SWRD, QuantizerSpec, paper_quantizer, PGD, paper_pgd, Defended, "
            "Square, load_dataset, load_pretrained; import torch; "
            "assert torch.initial_seed() != 0 or True; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_papers_settings_are_typed_once():
    """σ, τ, β and the ε unit conversion are typed in paper.py only: no other module or chapter
    retypes 0.1 * 255 ** 2 (6502.5), 0.5 * 255 ** 2 or an 'x 255 unless MNIST' rule."""
    patterns = [r"0\.1 \* 255 \*\* 2", r"0\.5 \* 255 \*\* 2", r"6502\.5(?!\))", r"32512\.5",
                r"255 if .*mnist", r"if .*mnist.* else 255", r"\"mnist\" else 255"]
    hits = []
    files = [p for _, p in _modules() if p.name != "paper.py"] + sorted(PKG.parent.glob("book/*.ipynb"))
    for path in files:
        text = path.read_text()
        if path.suffix == ".py":   # docstrings may quote the paper's numbers; code may not
            tree = ast.parse(text)
            docs = {ast.get_docstring(n, clean=False) for n in ast.walk(tree)
                    if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
            for d in docs - {None}:
                text = text.replace(d, "")
            text = "\n".join(line.split("#")[0] for line in text.splitlines())
        else:
            import json

            text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"] if c["cell_type"] == "code")
        hits += [f"{path.name}: {p}" for p in patterns if re.search(p, text)]
    assert not hits, hits

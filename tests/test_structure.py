"""The package's shape, read from the code: no import circle (function-level imports included), no module
over 400 lines, and a CLI and option declarations that answer without importing torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "imgtrans"
MAX_LINES = 400
# What may be imported inside a function: the optional extras (pip install imgtrans[ray] / [team]), and the
# libraries that cost seconds to import where only rare paths need them — torchmetrics (FID, KID, IS, pulling in
# torchvision), torchvision (16-bit colour PNGs) and onnx (logging an exported generator, in the tracking module
# every training process imports) — so that training processes start without them.
LATE_IMPORTS = {"ray", "psycopg", "torchmetrics", "torch_fidelity", "torchvision", "onnx", "onnxruntime.transformers"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported module of this package, whether inside a function), for every import statement."""
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    full = f"{child.module}.{alias.name}"
                    found.append((full if full in known else child.module, inner))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


def test_no_import_circle_even_through_function_level_imports():
    known = set(modules())
    graph = {name: {m for m, _ in imports_of(path, known) if m in known and m != name}
             for name, path in modules().items()}
    state: dict[str, int] = {}

    def cycle_from(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt not in state and (found := cycle_from(nxt, trail + [node])):
                return found
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = cycle_from(name, [])
            assert cycle is None, " → ".join(cycle[cycle.index(cycle[-1]):])


def test_function_level_imports_only_for_optional_extras():
    known = set(modules())
    late = [(name, imported) for name, path in modules().items() for imported, nested in imports_of(path, known)
            if nested and not any(imported == m or imported.startswith(m + ".") for m in LATE_IMPORTS)]
    assert not late, late


def test_no_module_over_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_cli_and_every_option_import_without_torch():
    code = ("import sys, imgtrans.cli, imgtrans.commands, imgtrans.project_file; "
            "from imgtrans.commands import COMMANDS; "
            "[c.config_class() for c in COMMANDS.values()]; "
            "imgtrans.project_file.render(); "
            "heavy = [m for m in ('torch', 'mlflow', 'optuna', 'onnxruntime', 'numpy') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_help_answers_without_importing_torch():
    for args in (["--help"], ["pix2pix", "--help"], ["translate", "--help"], ["study", "--help"]):
        code = (f"import sys; from imgtrans.cli import main\n"
                f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
                "sys.exit(1 if 'torch' in sys.modules else 0)")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 0 and "usage: imgtrans" in result.stdout, result.stderr

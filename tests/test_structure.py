"""The shape of the code (docs/design.md): import contracts checked by import-linter (configured in
pyproject.toml), short functions, thin CLI commands, and the encoder family named in one place (``models``)."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "data_prep", "models")
CONTRACTS = ("libraries", "tracking", "report", "cli", "mlflow", "layers")
MAX_FUNCTION_LINES = 60
# A command's body (docstring aside, nested statements counted): a few lazy imports, options into a config, one
# library call (inside a progress context), a usage check per mode (prep has two: SOURCE OUT and --verify OUT)
# and the printed summary fit in about 20. 25 leaves room for that, and stops a loop over results, a table being
# built or a tracker being driven from living in the command.
MAX_COMMAND_STATEMENTS = 25


def _contract_ids() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return [c["id"] for c in config["tool"]["importlinter"]["contracts"]]


def test_every_contract_is_configured():
    assert sorted(_contract_ids()) == sorted(CONTRACTS)


@pytest.mark.parametrize("contract", CONTRACTS)
def test_import_contract(contract):
    """One import-linter contract of pyproject.toml; on failure, import-linter's report (which import, which line)."""
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.is_file(), f"{lint} not found: install the test extra (pip install -e '.[test]')"
    proc = subprocess.run([str(lint), "--no-cache", "--no-logo", "--contract", contract, str(REPO / "pyproject.toml")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"import contract {contract!r} broken:\n{proc.stdout}\n{proc.stderr}"


def _product_files():
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def _functions(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_long_functions():
    """No function or method over MAX_FUNCTION_LINES lines, counted from ``def`` to its last line."""
    long = [f"{path.relative_to(REPO)}:{fn.lineno} {fn.name} {fn.end_lineno - fn.lineno + 1}"
            for path in _product_files() for fn in _functions(path)
            if fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (file:line name length):\n" + "\n".join(long)


def _statements(fn) -> int:
    """Statements of a function's body at any depth, its docstring not counted."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    body = tree.body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return sum(isinstance(node, ast.stmt) for stmt in body for node in ast.walk(stmt))


def test_cli_commands_are_thin():
    """Each ``orch`` command parses, calls one library function and prints (docs/design.md, the CLI layer)."""
    from orchestrator.cli import main

    sizes = {name: _statements(inspect.unwrap(main.commands[name].callback)) for name in main.list_commands(None)}
    fat = [f"orch {name}: {n} statements" for name, n in sizes.items() if n > MAX_COMMAND_STATEMENTS]
    assert not fat, f"commands over {MAX_COMMAND_STATEMENTS} statements (move the work into the library):\n" + \
        "\n".join(fat)


ENCODER_PAIR = {"resnet18", "resnet34"}


def _encoder_lists(path: Path):
    """Tuple, list or set literals naming encoders (two of the family at least); dicts keyed by encoder are data."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            names = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            if ENCODER_PAIR <= names:
                yield node.lineno


def test_encoder_names_live_in_models():
    """The encoder family is ``models.ENCODERS`` (``models.list_encoders()``); orchestrator never lists it again."""
    found = [f"{path.relative_to(REPO)}:{line}" for path in sorted((REPO / "orchestrator").rglob("*.py"))
             for line in _encoder_lists(path)]
    assert not found, "encoder names listed outside models/ (use models.list_encoders()):\n" + "\n".join(found)

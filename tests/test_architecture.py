"""The boundaries the tree draws, enforced: the pure core imports no I/O, the provisioner never imports the bot.

Two checks per module, because each misses what the other sees: importing it in a fresh interpreter and
reading ``sys.modules`` catches what it pulls in transitively; reading its source catches an import hidden
inside a function, which runs only on the path that needs it.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "provisioner" / "core"

# Pulled in transitively, any of these means the core does I/O or depends on how the config is stored.
CORE_FORBIDDEN_MODULES = (
    "aiohttp", "ldap3", "ldap", "nio", "yaml", "sqlite3", "psycopg2", "click",
    "provisioner.config", "provisioner.embedded", "provisioner.synapse", "provisioner.ldap_reader",
    "provisioner.observe", "provisioner.apply", "provisioner.sync", "bridge.matrix.client", "bridge.bot",
    "bridge.events", "socket", "ssl", "asyncio", "subprocess", "http", "urllib", "selectors", "tempfile",
    "shutil", "concurrent",
)  # fmt: skip
# Imported by name in a core file. ``os`` and ``pathlib`` are loaded by every interpreter at start-up, so
# only the source shows whether the core uses them; ``time``, because the clock is injected.
CORE_FORBIDDEN_IMPORTS = (*CORE_FORBIDDEN_MODULES, "os", "io", "pathlib", "glob", "time", "provisioner.demo")
# The names both sides share and the package doors: loaded by the pure core, so they must stay light.
LIGHT_FORBIDDEN_MODULES = ("aiohttp", "nio", "yaml", "ldap3", "ldap", "asyncio", "ssl", "socket", "http")
BOT_MODULES = ("bridge.bot", "bridge.events")


def core_modules() -> list[str]:
    return sorted(
        "provisioner.core" if p.name == "__init__.py" else f"provisioner.core.{p.stem}"
        for p in CORE.glob("*.py")
    )


def package_modules(package: str) -> list[str]:
    base = ROOT / package
    out = []
    for p in sorted(base.rglob("*.py")):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def loaded_by(module: str, *, path: tuple[Path, ...] = (ROOT,)) -> set[str]:
    """The modules a fresh interpreter loads to import ``module``, beyond those loaded at start-up."""
    code = (
        "import importlib, json, sys\n"
        "before = set(sys.modules)\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, f"importing {module} failed:\n{out.stderr}"
    return set(json.loads(out.stdout))


def imported_in_source(path: Path) -> set[str]:
    """Every module an ``import`` statement in the file names, at any depth (functions included)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def violations(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    """The modules that are one of ``forbidden`` or inside one of them (``ldap`` forbids ``ldap.dn``)."""
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


def source_of(module: str) -> Path:
    p = ROOT.joinpath(*module.split("."))
    return p / "__init__.py" if p.is_dir() else p.with_suffix(".py")


# --- the pure core -----------------------------------------------------------------------------------------


def test_the_core_has_the_modules_the_layout_names() -> None:
    # The checks below run per module found; a core emptied by a move would pass them all.
    names = core_modules()
    for expected in ("model", "dn", "identity", "directory", "layout", "desired", "reconcile", "actions"):
        assert f"provisioner.core.{expected}" in names


@pytest.mark.parametrize("module", core_modules())
def test_pure_core_module_loads_no_io_and_no_config(module: str) -> None:
    assert violations(loaded_by(module), CORE_FORBIDDEN_MODULES) == []


@pytest.mark.parametrize("module", core_modules())
def test_pure_core_source_imports_no_io_even_inside_functions(module: str) -> None:
    assert violations(imported_in_source(source_of(module)), CORE_FORBIDDEN_IMPORTS) == []


# A screen: what a reviewer reads without scrolling. reconcile() was once 212 lines.
MAX_CORE_FUNCTION_LINES = 60


def long_functions(path: Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    ]


@pytest.mark.parametrize("module", core_modules())
def test_no_core_function_is_longer_than_a_screen(module: str) -> None:
    assert long_functions(source_of(module), MAX_CORE_FUNCTION_LINES) == []


def test_the_length_check_sees_a_long_function(tmp_path: Path) -> None:
    src = tmp_path / "long.py"
    src.write_text("def f():\n" + "    x = 1\n" * 60, encoding="utf-8")
    assert long_functions(src, MAX_CORE_FUNCTION_LINES) == ["long.py:1 f (61 lines)"]


# --- the checker itself must fail on a module that breaks the rule ---------------------------------------

BREAKING = {
    "top_level": "import provisioner.config\n",
    "from_import": "from provisioner.config import Config\n",
    "transitive": "import provisioner.sync\n",  # the shell, which imports the config
}


@pytest.mark.parametrize("case", sorted(BREAKING))
def test_checker_fails_on_a_pure_module_that_imports_the_config(case: str, tmp_path: Path) -> None:
    (tmp_path / "synthetic_pure.py").write_text(f"import dataclasses\n{BREAKING[case]}", encoding="utf-8")
    found = violations(loaded_by("synthetic_pure", path=(tmp_path, ROOT)), CORE_FORBIDDEN_MODULES)
    assert "provisioner.config" in found


def test_checker_fails_on_an_import_hidden_in_a_function(tmp_path: Path) -> None:
    src = tmp_path / "synthetic_pure.py"
    src.write_text("def later():\n    from provisioner.config import load_config\n", encoding="utf-8")
    # Importing it loads nothing forbidden: only reading the source finds the import.
    assert violations(loaded_by("synthetic_pure", path=(tmp_path, ROOT)), CORE_FORBIDDEN_MODULES) == []
    assert violations(imported_in_source(src), CORE_FORBIDDEN_IMPORTS) == [
        "provisioner.config",
        "provisioner.config.load_config",
    ]


def test_checker_passes_a_module_that_keeps_the_rule(tmp_path: Path) -> None:
    src = tmp_path / "synthetic_pure.py"
    src.write_text("import dataclasses\nfrom provisioner.core.policy import LayoutPolicy\n", encoding="utf-8")
    assert violations(loaded_by("synthetic_pure", path=(tmp_path, ROOT)), CORE_FORBIDDEN_MODULES) == []
    assert violations(imported_in_source(src), CORE_FORBIDDEN_IMPORTS) == []


# --- the provisioner never imports the bot; the shared names stay light -----------------------------------


@pytest.mark.parametrize("module", package_modules("provisioner"))
def test_no_provisioner_module_imports_the_bot(module: str) -> None:
    assert violations(imported_in_source(source_of(module)), BOT_MODULES) == []


def test_the_provisioner_shells_load_no_bot_module() -> None:
    # The CLI and the demo reach every shell of the provisioner: nothing on their import path is the bot's.
    for entry in ("provisioner.cli", "provisioner.demo"):
        assert violations(loaded_by(entry), BOT_MODULES) == []


@pytest.mark.parametrize(
    "module",
    # The LDAP vocabulary and the secret reader are loaded by the config parser and inside Synapse.
    ["bridge", "bridge.matrix", "bridge.matrix.contract", "bridge.matrix.secrets", "provisioner.ldap_common"],
)
def test_shared_names_import_nothing_heavy(module: str) -> None:
    assert violations(loaded_by(module), LIGHT_FORBIDDEN_MODULES) == []


# --- the README's layout table is the tree ----------------------------------------------------------------


def layout_rows() -> dict[str, str]:
    """The README's layout table: path → description."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.fullmatch(r"\| `([^`]+)` \| (.*) \|", line)
        if m:
            rows[m[1]] = m[2]
    return rows


def top_level_entries() -> set[str]:
    """What ``ls`` shows of the repository: tracked and new files, never what .gitignore keeps out."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    names = set()
    for path in out.stdout.splitlines():
        if not (ROOT / path).exists():  # deleted in the working tree, not yet committed
            continue
        first, sep, _ = path.partition("/")
        if not first.startswith("."):
            names.add(first + "/" if sep else first)
    return names - {"README.md"}


def test_readme_layout_names_every_top_level_entry_and_nothing_else() -> None:
    rows = layout_rows()
    assert top_level_entries() - set(rows) == set(), "add these to README.md's layout table"
    # A row may name a package that is still a module (bridge/bot.py before it became bridge/bot/).
    missing = [
        p for p in rows if not (ROOT / p.rstrip("/")).exists() and not (ROOT / f"{p.rstrip('/')}.py").exists()
    ]
    assert missing == []


@pytest.mark.parametrize("package", ["provisioner", "bridge"])
def test_readme_layout_describes_every_module_of_the_packages(package: str) -> None:
    rows = layout_rows()
    for init in sorted((ROOT / package).rglob("__init__.py")):
        folder = init.parent.relative_to(ROOT).as_posix() + "/"
        assert folder in rows, f"README.md's layout table has no row for {folder}"
        assert init.read_text(encoding="utf-8").lstrip().startswith('"""'), f"{init} has no docstring"
        for module in sorted(init.parent.glob("*.py")):
            stem = module.stem
            if stem == "__init__" or f"{folder}{stem}/" in rows:
                continue
            assert f"`{stem}`" in rows[folder], f"README.md's row for {folder} does not name `{stem}`"

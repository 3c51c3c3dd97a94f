"""The package's shape holds: imports run down the data path, and the module map is true."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "prefect_comet"
MODULE_MAP = ROOT / "docs" / "architecture.md"

# Units of the data path, lowest first. A module may import from its own unit (its folder, or
# itself for a top-level file) and from units below it, never from a unit at or above its rank.
RANKS: dict[str, int] = {
    "_files": 0, "_logging": 0, "exceptions": 0, "models": 0, "options": 0,  # foundations
    "api": 1,                                                 # HTTP and the two API families
    "media": 2, "ui": 2, "credentials": 2,                    # what a video is; what people see
    "steps": 3,                                               # one job's life
    "suspension": 4,                                          # waiting without a worker
    "callbacks": 5,                                           # Kling callbacks: receiver, wake-ups
    "tasks": 6,
    "flows": 7, "sweeper": 7,
    "batch": 8,
    "testing": 9,
    "cli": 10,                                                # the prefect-comet command
    "__init__": 11,                                           # the public surface
}


def _unit(module: str) -> str:
    """`prefect_comet.steps.ledger` -> `steps`; `prefect_comet.tasks` -> `tasks`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1] if len(parts) > 2 else [*parts[:-1], "__init__"]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)


def test_every_unit_has_a_rank():
    assert {_unit(_module_name(path)) for path in _modules()} == set(RANKS)


def test_no_folder_imports_from_one_above_it_in_the_data_path():
    wrong = []
    for path in _modules():
        unit = _unit(_module_name(path))
        for imported in _imports(path):
            if not imported.startswith("prefect_comet."):
                continue
            target = _unit(imported)
            if target in RANKS and target != unit and RANKS[target] >= RANKS[unit]:
                wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not wrong, "imports that climb the data path:\n" + "\n".join(sorted(set(wrong)))


def test_the_api_folder_speaks_http_without_prefect():
    for path in (PACKAGE / "api").glob("*.py"):
        prefect = {name for name in _imports(path) if name == "prefect" or name.startswith("prefect.")}
        assert not prefect, f"{path.relative_to(ROOT)} imports {sorted(prefect)}"


def module_map_rows() -> list[str]:
    """One table row per module: its path and the first line of its docstring."""
    rows = []
    for path in _modules():
        if "emulator" in path.parts and path.name != "__init__.py":
            continue  # the emulator is one row: test support, with its own README section
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        shown = path.relative_to(ROOT).as_posix()
        if path.name == "__init__.py" and path.parent != PACKAGE:
            shown = path.parent.relative_to(ROOT).as_posix() + "/"
        rows.append(f"| `{shown}` | {docstring.splitlines()[0] if docstring else ''} |")
    return rows


def test_every_module_has_a_docstring():
    missing = [row for row in module_map_rows() if row.endswith("|  |")]
    assert not missing


def test_the_module_map_lists_every_module_with_its_docstring():
    text = MODULE_MAP.read_text()
    expected = "\n".join(module_map_rows())
    assert expected in text, f"docs/architecture.md is out of date; its module table should read:\n{expected}"


def test_the_readme_links_the_module_map():
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()

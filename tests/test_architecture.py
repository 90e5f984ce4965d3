"""docs/architecture.md stays true: the import graph matches its table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "hubtransfer"
DOC = Path(__file__).parents[1] / "docs" / "architecture.md"


def _table() -> dict[str, tuple[set[str], bool]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"\| `(\w+)` \| [^|]+ \| ([^|]+) \| (yes|no) \|$", line)
        if match:
            allowed = set(re.findall(r"[_a-z]+", re.sub(r"\([^)]*\)", "", match.group(2))))
            allowed = {"__init__" if a in ("the", "package") else a for a in allowed}
            rows[match.group(1)] = (allowed - {"lazily", "for"}, match.group(3) == "yes")
    return rows


def _imports(module: str, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse((SRC / f"{module}.py").read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("hubtransfer")
        ):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "hubtransfer":
                    found.add("__init__")
                elif alias.name.startswith("hubtransfer."):
                    found.add(alias.name.split(".")[1])
    return found


def test_every_module_is_in_the_table() -> None:
    modules = {p.stem for p in SRC.glob("*.py")} - {"__init__", "_version"}
    assert modules == set(_table()), "update docs/architecture.md's module table"


def test_imports_follow_the_table() -> None:
    for module, (allowed, _) in _table().items():
        extra = _imports(module) - allowed - {"_version"} - ({"__init__"} - allowed)
        assert not extra, f"{module} imports {sorted(extra)}, not allowed by docs/architecture.md"


def test_light_modules_do_not_import_tensorflow_at_import_time() -> None:
    table = _table()
    for module, (_, light) in table.items():
        if not light:
            continue
        seen, todo = set(), [module]
        while todo:
            current = todo.pop()
            if current in seen or current not in table:
                continue
            seen.add(current)
            source = (SRC / f"{current}.py").read_text()
            top = ast.parse(source).body
            heavy = [
                n
                for n in top
                if isinstance(n, (ast.Import, ast.ImportFrom))
                and any(
                    (getattr(n, "module", None) or a.name).split(".")[0]
                    in ("tensorflow", "tf_keras", "tensorflow_hub")
                    for a in n.names
                )
            ]
            assert not heavy, f"light module {module} imports TensorFlow through {current}"
            todo += sorted(_imports(current, top_level_only=True) - {"__init__"})
        assert "_tf" not in seen, f"light module {module} imports _tf at import time"

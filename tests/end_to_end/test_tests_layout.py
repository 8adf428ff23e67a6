"""The tests mirror the package (issue #14): one folder per room of src/sftprep, cross-cutting tests in
end_to_end/, committed data in data/, helper modules in tests/ itself (importable from every room through
pytest's `pythonpath`), test file names unique (pytest imports them by basename: no __init__.py files), and
each stage module below has unit tests in its room that import it."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from conftest import REPO_ROOT, TESTS_DIR

PACKAGE = REPO_ROOT / "src" / "sftprep"
NOT_ROOMS = {"data", "end_to_end", "__pycache__"}
# stage modules whose behaviour is pinned by unit tests of their own (not only through `prepare`)
UNIT_TESTED = [
    "labels.boundary_check",
    "labels.build_loss_labels",
    "labels.truncation",
    "tokenize.literal_segments",
    "tokenize.special_text",
    "templates.render_chat_prompt",
    "templates.turns",
    "templates.modes",
    "preparation.stats",
    "report.template_check",
]


def rooms() -> set[str]:
    """The package's sub-packages (templates/ has no __init__.py: a namespace package)."""
    return {p.parent.name for p in PACKAGE.glob("*/*.py")}


def room_folders() -> list[Path]:
    return [p for p in TESTS_DIR.iterdir() if p.is_dir() and p.name not in NOT_ROOMS]


def test_every_room_has_a_test_folder_and_every_folder_is_a_room() -> None:
    assert {p.name for p in room_folders()} == rooms()
    for folder in room_folders():
        assert sorted(folder.glob("test_*.py")), f"{folder} has no tests"


def test_test_file_names_are_unique() -> None:
    names = Counter(p.name for p in TESTS_DIR.rglob("*.py") if "data" not in p.relative_to(TESTS_DIR).parts)
    assert [n for n, k in names.items() if k > 1] == []


def test_no_init_files_and_helpers_at_the_top() -> None:
    assert sorted(TESTS_DIR.rglob("__init__.py")) == []
    helpers = {p.name for p in TESTS_DIR.glob("*.py")}
    assert {"conftest.py", "dummy_tokenizer.py", "hand_render.py", "cli_helpers.py"} <= helpers
    assert not any(p.name.startswith("test_") for p in TESTS_DIR.glob("*.py")), "tests belong in a room"


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sftprep."):
            found.add(node.module.removeprefix("sftprep."))
            found |= {f"{node.module.removeprefix('sftprep.')}.{a.name}" for a in node.names}
    return found


def test_stage_modules_have_unit_tests_in_their_room() -> None:
    missing = []
    for module in UNIT_TESTED:
        room = module.split(".")[0]
        assert (PACKAGE / f"{module.replace('.', '/')}.py").is_file(), module
        if not any(module in imported_modules(p) for p in (TESTS_DIR / room).glob("test_*.py")):
            missing.append(module)
    assert missing == []

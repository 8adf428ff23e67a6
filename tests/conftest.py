"""Shared test set-up: where the repository, the committed test data and the optional ../shared checkout
(real data, tokenizers) live.

The tests mirror the package's rooms (tests/read/, tests/templates/, ...); the helper modules next to this
file (dummy_tokenizer.py, oracle.py, ...) are importable from every room (pyproject: pythonpath = ["tests"])."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
DATA_DIR = TESTS_DIR / "data"  # committed test data (bad-input corpus, real Jinja templates)
SHARED_DIR = REPO_ROOT.parent / "shared"

# Tests that need ../shared: skipped with a clear reason when the checkout is absent.
requires_shared = pytest.mark.skipif(
    not SHARED_DIR.is_dir(), reason=f"{SHARED_DIR} is absent (the ../shared checkout is optional)"
)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} is absent (the ../shared checkout is optional)")
    return SHARED_DIR

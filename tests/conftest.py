"""Shared test set-up: where the optional ../shared checkout (real data, tokenizers) lives."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"

# Tests that need ../shared: skipped with a clear reason when the checkout is absent.
requires_shared = pytest.mark.skipif(
    not SHARED_DIR.is_dir(), reason=f"{SHARED_DIR} is absent (the ../shared checkout is optional)"
)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} is absent (the ../shared checkout is optional)")
    return SHARED_DIR

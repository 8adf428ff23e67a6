"""sftprep.cache.package_version (cache keys of tokenizer and template analyses) answers as importlib.metadata
does, without importing it for packages that are installed."""

from __future__ import annotations

import sys
from importlib import metadata

import pytest

from sftprep.cache import package_version


@pytest.mark.parametrize(
    "name", ["tokenizers", "tiktoken", "jinja2", "numpy", "pyarrow", "PyYAML", "typing-extensions"]
)
def test_the_installed_version_as_importlib_metadata_gives_it(name: str) -> None:
    assert package_version(name) == metadata.version(name)


def test_a_missing_package_has_none() -> None:
    assert package_version("sftprep-no-such-package") is None


def test_no_importlib_metadata_for_an_installed_package() -> None:
    import subprocess

    code = "import sys; from sftprep.cache import package_version as v; v('numpy'); v('pyarrow'); "
    code += "print('importlib.metadata' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

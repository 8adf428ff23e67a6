"""sftprep: chat and instruction data to exact (input_ids, labels) for assistant-only SFT."""

from __future__ import annotations

__version__ = "0.1.0"

from sftprep.api import collate, load, prepare

__all__ = ["__version__", "collate", "load", "prepare"]

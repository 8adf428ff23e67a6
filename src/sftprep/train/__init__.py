"""Training on prepared data: `sftprep train`, `sftprep generate`, `sftprep demo` (needs the `train` extra)."""

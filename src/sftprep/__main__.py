"""`python -m sftprep ...` runs the `sftprep` command line (so `torchrun ... -m sftprep train ...` works)."""

from sftprep.cli import entry

if __name__ == "__main__":
    entry()

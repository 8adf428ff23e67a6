"""`python -m sftprep ...` runs the `sftprep` command line (so `torchrun ... -m sftprep train ...` works)."""

from sftprep.cli import main

if __name__ == "__main__":
    main()

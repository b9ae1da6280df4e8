"""`python -m everloop ...` is the `everloop` command; `torchrun ... -m everloop train ...`
starts it once per process (docs/distributed.md)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

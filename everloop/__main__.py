"""`python -m everloop ...` is the `everloop` command; `torchrun ... -m everloop train ...`
starts it once per process (docs/distributed.md)."""
import os
import sys

from .cli import main

if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a torchrun process: no teardown abort (exit_now)
        from .distributed import exit_now
        exit_now(code)
    sys.exit(code)

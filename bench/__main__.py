"""``python -m bench``: start (or reuse) the stack, run the workloads, write bench/results/."""

from bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

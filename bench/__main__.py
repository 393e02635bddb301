"""``python -m bench`` is the ``transfer-bench`` command."""

from bench.cli import main

main()

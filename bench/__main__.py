"""``python -m bench`` is the ``transfer-bench`` command."""

from bench.cli.app import main

main()

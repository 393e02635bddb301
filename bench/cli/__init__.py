"""The commands: the only place that prints to the terminal and picks exit codes (``app`` holds them)."""

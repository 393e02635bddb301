"""Before a run: what a suite downloads, how fast this machine is, the estimate, and ``check``'s fitted suite."""

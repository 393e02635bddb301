"""How cells run: the driver, the table of executors, warm isolated workers, GPU slots, Ray."""

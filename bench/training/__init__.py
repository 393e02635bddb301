"""One cell's run: device and seeding, the loop, evaluation, the probe and feature cache, health, pretraining."""

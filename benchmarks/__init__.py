"""Benchmarks of the sync and of the console's queries (`python -m sync bench`)."""

"""Sandbox benchmarks: `python -m bench.sandbox` (see __main__)."""

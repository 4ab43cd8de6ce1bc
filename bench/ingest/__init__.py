"""bench/ingest: webhook ingest throughput and latency, codex-bot's receiver against Probot.

``python -m bench.ingest`` (see ``__main__.py``).
"""

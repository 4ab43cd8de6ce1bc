"""Soak: many signed deliveries of the real event mix while task workers are killed and Redis is
restarted; then zero duplicates, one outcome per acknowledged delivery, nothing stuck or left."""

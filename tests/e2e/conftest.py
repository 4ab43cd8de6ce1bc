"""One whole bot on loopback for the end-to-end tests: the simulator, the scripted model, the
real ``codexbot serve`` and ``codexbot worker`` processes, real Redis and the real Docker engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from sim.stack import DEMO_SCRIPTS, Stack
from tests.conftest import REDIS_URL

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url) -> Iterator[Stack]:
    Redis.from_url(redis_url).flushdb()  # the simulator numbers reviews from 1 again each run
    with Stack(
        data_dir=tmp_path_factory.mktemp("stack"),
        redis_url=REDIS_URL,
        script_dirs=(DEMO_SCRIPTS, SCRIPTS),
    ) as running:
        yield running

# Shared pytest fixtures. `mosquitto`: a private, real mosquitto broker for one test.
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from rig import start_mosquitto, stop_mosquitto
from tools.mosquitto import Mosquitto as Broker


@dataclass(frozen=True)
class Mosquitto:
    broker: Broker
    host: str
    port: int

    @property
    def url(self) -> str:
        return "mqtt://%s:%d" % (self.host, self.port)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """mosquitto on 127.0.0.1:<free port>, anonymous, no persistence; stopped after the test.

    Fails the test (does not skip) if mosquitto cannot start.
    """
    broker, port = start_mosquitto(tmp_path)
    try:
        yield Mosquitto(broker, "127.0.0.1", port)
    finally:
        stop_mosquitto(broker)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-scale", type=float, default=1.0,
                     help="stretch every phase of the chaos test by this factor (default 1: about 4 minutes)")


@pytest.fixture
def chaos_scale(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--chaos-scale"))

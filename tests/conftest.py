# Shared pytest fixtures. `mosquitto`: a private, real mosquitto broker for one test.
# `corpus`: the labelled traces, for the few tests that replay them.
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from rig import start_mosquitto, stop_mosquitto
from tools.common.mosquitto import Mosquitto as Broker


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


# The labelled traces live beside the checkout, never in it: <repo>/../shared/corpus.
BESIDE_CHECKOUT = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


def find_corpus() -> tuple[Path | None, str]:
    """(the folder holding dev/, or None), and where it was looked for. $CORPUS_DIR wins
    when set: a wrong override is an error, not a reason to read another corpus."""
    override = os.environ.get("CORPUS_DIR")
    candidate = Path(override) if override else BESIDE_CHECKOUT
    where = "%s (%s)" % (candidate, "$CORPUS_DIR" if override else "beside the checkout")
    return (candidate.resolve() if (candidate / "dev").is_dir() else None), where


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The labelled corpus: the folder holding dev/<profile>/<trace>.jsonl.gz and the
    .labels.json files. Fails (never skips) the tests that need it when it is missing."""
    found, where = find_corpus()
    if found is None:
        pytest.fail("the labelled corpus is not at %s: set CORPUS_DIR to the folder holding dev/ "
                    "(e.g. CORPUS_DIR=/path/to/shared/corpus)" % where, pytrace=False)
    return found

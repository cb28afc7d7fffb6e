"""edge/state.py, the device's small persistent state (boot counter, learned habits): what
is saved is there after a restart, a save replaces the whole copy, a torn save leaves the
old copy, and MicroPython and CPython read each other's files."""
from __future__ import annotations

import os

import pytest

from edge.state import FileStore, MemoryStore
from rig import run_micropython


@pytest.fixture(params=["file", "memory"])
def store(request, tmp_path):
    return FileStore(str(tmp_path / "state")) if request.param == "file" else MemoryStore()


def test_what_was_saved_is_loaded_and_an_unknown_name_is_none(store) -> None:
    assert store.load("boot") is None
    store.save("boot", b"41")
    store.save("habit", bytes(range(256)))
    assert store.load("boot") == b"41"
    assert store.load("habit") == bytes(range(256))


def test_a_save_replaces_the_whole_copy(store) -> None:
    store.save("habit", b"x" * 100)
    store.save("habit", b"short")
    assert store.load("habit") == b"short"


def test_a_saved_buffer_changed_afterwards_does_not_change_the_state(store) -> None:
    buf = bytearray(b"1234")
    store.save("boot", buf)
    buf[0] = ord("9")
    assert store.load("boot") == b"1234"


def test_the_state_outlives_the_process(tmp_path) -> None:
    FileStore(str(tmp_path / "state")).save("boot", b"7")
    again = FileStore(str(tmp_path / "state"))           # the folder exists now: fine
    assert again.load("boot") == b"7"
    assert sorted(os.listdir(tmp_path / "state")) == ["boot"]     # no temporary file left


def test_a_save_torn_by_a_power_cut_leaves_the_old_copy(tmp_path) -> None:
    store = FileStore(str(tmp_path / "state"))
    store.save("habit", b"learned over a week")
    # the cut came while the new copy was being written: only its temporary file exists
    (tmp_path / "state" / "habit.tmp").write_bytes(b"half of the ne")
    assert FileStore(str(tmp_path / "state")).load("habit") == b"learned over a week"
    store.save("habit", b"next")                          # and the next save still works
    assert store.load("habit") == b"next"


def test_the_folder_is_made_on_first_use(tmp_path) -> None:
    FileStore(str(tmp_path / "state")).save("boot", b"1")
    assert (tmp_path / "state" / "boot").read_bytes() == b"1"


MP_SCRIPT = """
import sys
from edge.state import FileStore
s = FileStore(sys.argv[1])
print(s.load("from_cpython").decode())
s.save("from_micropython", bytes(range(256)))
s.save("boot", b"2")
"""


def test_micropython_and_cpython_read_each_others_state(tmp_path) -> None:
    # a Pi may switch runtimes; an ESP32's flash is the same files
    folder = str(tmp_path / "state")
    FileStore(folder).save("from_cpython", b"hello from CPython")
    FileStore(folder).save("boot", b"1")
    script = tmp_path / "state_run.py"
    script.write_text(MP_SCRIPT)
    out = run_micropython(script, folder)
    assert out.strip() == "hello from CPython"
    store = FileStore(folder)
    assert store.load("from_micropython") == bytes(range(256))
    assert store.load("boot") == b"2"
    assert sorted(os.listdir(folder)) == ["boot", "from_cpython", "from_micropython"]

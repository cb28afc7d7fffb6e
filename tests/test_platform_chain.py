"""Tamper-evident records (issue 11): each device's records at the platform form a hash
chain, and `edge-gateway platform verify` names any record edited, removed or
reordered behind the platform's back, here with sqlite3 directly."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main as gateway_cli
from gateway.platform import PlatformDB, validate_event
from test_platform import ev


def platform_db(tmp_path: Path) -> Path:
    """Two devices' records, interleaved, over three uploads."""
    path = tmp_path / "platform.sqlite"
    db = PlatformDB(path)
    for seqs in ((1, 2), (3, 4, 5), (6,)):
        events = [ev(d, s, floor=s) for s in seqs for d in ("elev-001", "elev-002")]
        db.add("gw-1", [validate_event(e, "e") for e in events])
    db.close()
    return path


def verify(path: Path, capsys: Any) -> tuple[int, list[str]]:
    code = gateway_cli(["platform", "verify", "--db", str(path)])
    return code, capsys.readouterr().out.splitlines()


def sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for s in statements:
            conn.execute(s)
    conn.close()


def test_an_untouched_database_verifies(tmp_path: Path, capsys: Any) -> None:
    code, out = verify(platform_db(tmp_path), capsys)
    assert code == 0 and out == ["%s: 12 records, every device's chain intact" % (tmp_path / "platform.sqlite")]


COLUMNS = "id, device, boot, seq, type, action, t, clock_set, values_json, gateway, received_at, verified," \
          " payload, prev_hash, hash"
TAMPERING = [
    ("an edited value", ["UPDATE events SET values_json = replace(values_json, '\"floor\":3', '\"floor\":9')"
                         " WHERE id = 'elev-001:1:3'"],
     ["record elev-001:1:3 (row 5): its content does not match its hash: edited"]),
    ("an edited verdict", ["UPDATE events SET verified = 'mac_ok' WHERE id = 'elev-002:1:4'"],
     ["record elev-002:1:4 (row 8): its content does not match its hash: edited"]),
    ("a removed record", ["DELETE FROM events WHERE id = 'elev-001:1:2'"],
     ["record elev-001:1:3 (row 5): the record before it in elev-001's chain is missing: removed"]),
    ("the last record removed", ["DELETE FROM events WHERE id = 'elev-002:1:6'"],
     ["device elev-002: the chain ends after 5 records, its head says 6: records removed at its end"]),
    ("two records swapped", [
        "CREATE TEMP TABLE a AS SELECT %s FROM events WHERE id = 'elev-001:1:4'" % COLUMNS,
        "CREATE TEMP TABLE b AS SELECT %s FROM events WHERE id = 'elev-001:1:5'" % COLUMNS,
        "DELETE FROM events WHERE id IN ('elev-001:1:4', 'elev-001:1:5')",
        "INSERT INTO events (rowid, %s) SELECT 7, * FROM b" % COLUMNS,
        "INSERT INTO events (rowid, %s) SELECT 9, * FROM a" % COLUMNS],
     ["record elev-001:1:5 (row 7): out of order, it follows elev-001:1:4 (row 9) in the chain",
      "record elev-001:1:4 (row 9): out of order, it follows elev-001:1:3 (row 5) in the chain",
      "record elev-001:1:6 (row 11): out of order, it follows elev-001:1:5 (row 7) in the chain"]),
    ("a record hidden", ["UPDATE events SET superseded = 1 WHERE id = 'elev-001:1:1'"],
     ["record elev-001:1:1 (row 1): marked superseded, but no record replaces it: hidden"]),
]


@pytest.mark.parametrize("what,statements,problems", TAMPERING, ids=[t[0] for t in TAMPERING])
def test_verify_names_each_tampered_record(tmp_path: Path, capsys: Any, what: str, statements: list[str],
                                           problems: list[str]) -> None:
    path = platform_db(tmp_path)
    sql(path, *statements)
    code, out = verify(path, capsys)
    assert code == 1
    assert out[:-1] == problems
    assert out[-1].endswith("%d problems: the records were tampered with" % len(problems))


def test_verify_of_a_missing_file_says_so(tmp_path: Path, capsys: Any) -> None:
    assert gateway_cli(["platform", "verify", "--db", str(tmp_path / "nope.sqlite")]) == 2
    assert "no such file" in capsys.readouterr().err

"""gateway/store.py on a real SQLite file: a commit survives the process, (device, boot,
seq) is stored once, each stream's queue hands out its oldest events first, uploaded and
rejected events leave the queue for good, what retention may delete, and the marks that
outlive it (a deleted event sent again is a replay)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from hypothesis import given, settings, strategies as st

from edge import codec
from edge.codes import ACTIONS, code_of
from gateway.store import FILENAME, EventRow, Store, last_boot
from gateway.streams import DEFAULT_STREAMS, Stream

ALARMS, TELEMETRY = 0, 1       # ranks of the default streams


def tele(seq: int, device: str = "elev-001", boot: int = 1, floor: int = 3) -> EventRow:
    return EventRow(device, boot, seq, 0x01, "telemetry.elevator", "telemetry", "report",
                    1_700_000_000 + seq, True, {"floor": floor, "speed": 1.25})


def alarm(seq: int, device: str = "elev-001", boot: int = 1) -> EventRow:
    return EventRow(device, boot, seq, 0x20, "elevator.entrapment", "alarm", "raise",
                    1_700_000_000 + seq, True, {"floor": 7, "duration_s": 61})


def seqs(batch: list) -> list[int]:
    return [p.row.seq for p in batch]


# ---- durability ----------------------------------------------------------------------

def test_a_commit_is_on_disk_when_the_process_dies_right_after_it(tmp_path: Path) -> None:
    # the gateway acks the MQTT message right after commit(): a crash then must not
    # lose the event, so the writer here exits without closing anything
    writer = textwrap.dedent("""
        import os, sys
        from gateway.store import EventRow, Store
        store = Store.in_dir(sys.argv[1])
        store.commit([EventRow("elev-001", 1, s, 0x20, "elevator.entrapment", "alarm", "raise",
                               1_700_000_000, True, {"floor": 7, "duration_s": 61}) for s in (1, 2, 3)],
                     statuses=[("elev-001", "online")])
        store.mark_uploaded([EventRow("elev-001", 1, 1, 0, "", "", "", 0, True, {})])
        os._exit(0)
    """)
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", writer, str(tmp_path)], check=True, cwd=root, timeout=30)
    store = Store.in_dir(tmp_path)
    assert (tmp_path / FILENAME).is_file()
    assert [(r.seq, r.values) for r in store.events()] == [(s, {"floor": 7, "duration_s": 61}) for s in (1, 2, 3)]
    assert seqs(store.next_batch(ALARMS, 10)) == [2, 3]          # the upload mark survived too
    assert store.device_status() == {"elev-001": "online"}


def test_everything_an_event_says_comes_back_after_a_reopen(tmp_path: Path) -> None:
    secret = bytes(range(16))
    payload = codec.encode(codec.Signer(secret, "wm-7"), code_of("water.leak"), ACTIONS.index("raise"),
                           4, 17, 1_700_000_123, codec.values_of(code_of("water.leak"),
                                                                  {"duration_s": 3600, "flow": 0.125}), False)
    row = EventRow.from_decoded("wm-7", codec.decode(payload, codec.Signer(secret, "wm-7")))
    store = Store.in_dir(tmp_path)
    store.commit([row], now=1234.5)
    store.close()
    again = Store.in_dir(tmp_path)
    assert again.events() == [row]
    assert row.id == "wm-7:4:17" and row.clock_set is False
    (pending,) = again.next_batch(ALARMS, 10)
    assert pending.row == row and pending.received_at == 1234.5


# ---- de-duplication ------------------------------------------------------------------

def test_a_redelivered_event_is_a_duplicate_and_the_first_copy_is_kept(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    assert store.commit([tele(1), tele(2)]).inserted == 2
    # a resend after a lost PUBACK, even one whose body differs, is the same event
    r = store.commit([tele(2, floor=9), tele(3)])
    assert (r.inserted, r.duplicates) == (1, 1)
    assert [(e.seq, e.values["floor"]) for e in store.events()] == [(1, 3), (2, 3), (3, 3)]


def test_only_device_boot_and_seq_together_make_a_duplicate(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    store.commit([tele(1)])
    # after a reboot seq starts again; another device has its own numbers
    r = store.commit([tele(1, boot=2), tele(1, device="elev-002"), tele(1), tele(1, boot=2)])
    assert (r.inserted, r.duplicates) == (2, 2)
    assert sorted(e.id for e in store.events()) == ["elev-001:1:1", "elev-001:2:1", "elev-002:1:1"]


def test_a_duplicate_of_an_uploaded_event_is_not_uploaded_again(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    store.commit([alarm(1)])
    assert store.mark_uploaded([alarm(1)]) == 1
    assert store.commit([alarm(1)]).duplicates == 1
    assert store.next_batch(ALARMS, 10) == []
    assert store.counts() == {"stored": 1, "uploaded": 1, "rejected": 0, "pending": 0, "dropped": 0}


def test_counts_per_stream_include_duplicates(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    store.commit([alarm(1)])
    assert store.commit([alarm(1), tele(2), tele(3)]).by_rank == (1, 2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 6)), max_size=40),
       st.integers(1, 8))
def test_any_mix_of_repeats_stores_each_key_once(tmp_path_factory, keys, batch) -> None:
    store = Store.in_dir(tmp_path_factory.mktemp("store"))
    rows = [tele(seq, device="dev-%d" % d, boot=boot) for d, boot, seq in keys]
    inserted = duplicates = 0
    for i in range(0, len(rows), batch):
        r = store.commit(rows[i:i + batch])
        inserted += r.inserted
        duplicates += r.duplicates
    first_seen = list(dict.fromkeys(r.id for r in rows))
    assert [e.id for e in store.events()] == first_seen
    assert (inserted, duplicates) == (len(first_seen), len(rows) - len(first_seen))
    store.close()


# ---- the upload queues ---------------------------------------------------------------

def test_each_stream_hands_out_its_oldest_events_first_up_to_the_limit(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    store.commit([tele(1), alarm(2), tele(3)])
    store.commit([tele(4), alarm(5)])
    # arrival order, not seq: a device resending an old event after a new one
    store.commit([alarm(0)])
    assert seqs(store.next_batch(ALARMS, 10)) == [2, 5, 0]
    assert seqs(store.next_batch(TELEMETRY, 2)) == [1, 3]
    assert seqs(store.next_batch(TELEMETRY, 10)) == [1, 3, 4]
    assert store.pending_count(ALARMS) == 3 and store.pending_count(TELEMETRY) == 3
    assert store.pending_count() == 6


def test_next_batch_hands_out_the_same_events_until_they_are_marked(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    store.commit([tele(s) for s in range(1, 6)])
    assert seqs(store.next_batch(TELEMETRY, 3)) == [1, 2, 3]
    assert seqs(store.next_batch(TELEMETRY, 3)) == [1, 2, 3]     # nothing is taken by reading
    assert store.mark_uploaded([p.row for p in store.next_batch(TELEMETRY, 3)]) == 3
    assert seqs(store.next_batch(TELEMETRY, 3)) == [4, 5]


def test_next_batch_after_a_rowid_hands_out_only_what_came_since(tmp_path: Path) -> None:
    # an upload lane's cursor: each pending row is read once, however many commits come
    store = Store.in_dir(tmp_path)
    store.commit([tele(1), alarm(2), tele(3)])
    first = store.next_batch(TELEMETRY, 10)
    assert seqs(first) == [1, 3]
    store.commit([tele(4), alarm(5)])
    store.commit([tele(6)])
    assert seqs(store.next_batch(TELEMETRY, 10, after=first[-1].rowid)) == [4, 6]
    assert seqs(store.next_batch(TELEMETRY, 1, after=first[-1].rowid)) == [4]
    assert seqs(store.next_batch(TELEMETRY, 10)) == [1, 3, 4, 6]    # from the start: still pending


def test_a_pending_event_keeps_its_values_as_stored_json(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    result = store.commit([tele(1, floor=4)], now=12.5)
    assert result.at == 12.5
    (pending,) = store.next_batch(TELEMETRY, 10)
    assert pending.values_json == '{"floor":4,"speed":1.25}'
    assert pending.id == "elev-001:1:1" and pending.received_at == 12.5
    assert pending.row == tele(1, floor=4)
    assert store.mark_uploaded([pending]) == 1 and store.next_batch(TELEMETRY, 10) == []


def test_a_rejected_event_leaves_the_queue_and_keeps_its_reason(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    store.commit([alarm(1), alarm(2)])
    assert store.mark_rejected([alarm(1)], "422 unknown device", now=50.0) == 1
    assert seqs(store.next_batch(ALARMS, 10)) == [2]
    assert store.counts() == {"stored": 2, "uploaded": 0, "rejected": 1, "pending": 1, "dropped": 0}
    store.close()
    reason = Store.in_dir(tmp_path).conn.execute(
        "SELECT reject_reason, rejected_at FROM events WHERE seq = 1").fetchone()
    assert reason == ("422 unknown device", 50.0)


def test_a_lane_s_batch_is_marked_uploaded_once_and_nothing_beside_it(tmp_path: Path) -> None:
    # one UPDATE over the batch's rowid range: the other stream's rows inside the range
    # and the stream's rows after it stay pending
    store = Store.in_dir(tmp_path)
    store.commit([tele(1), alarm(2), tele(3), alarm(4), tele(5), tele(6)])
    batch = store.next_batch(TELEMETRY, 3)
    assert seqs(batch) == [1, 3, 5]
    assert store.mark_batch_uploaded(batch, now=7.0) == 3
    assert store.mark_batch_uploaded(batch, now=8.0) == 0           # a second time: nothing
    assert seqs(store.next_batch(TELEMETRY, 10)) == [6]
    assert seqs(store.next_batch(ALARMS, 10)) == [2, 4]
    assert store.conn.execute("SELECT seq, uploaded_at FROM events WHERE uploaded_at IS NOT NULL"
                              " ORDER BY seq").fetchall() == [(1, 7.0), (3, 7.0), (5, 7.0)]
    assert store.conn.execute("PRAGMA synchronous").fetchone() == (2,)  # marks are not fsynced, commits still are


def test_a_batch_read_before_a_delete_is_marked_by_key_not_by_rowids_given_again(tmp_path: Path) -> None:
    # the quota drops a batch's rows while it is on the wire; SQLite hands their rowids to
    # the next events, which must not be taken for the batch
    store = Store.in_dir(tmp_path)
    store.commit([tele(1), tele(2), tele(3)])
    batch = store.next_batch(TELEMETRY, 10)
    assert store.drop_pending(TELEMETRY, 3) == 3
    store.commit([tele(4), tele(5), tele(6)])
    again = store.next_batch(TELEMETRY, 10)
    assert {p.rowid for p in again} & {p.rowid for p in batch}      # the case this is about
    assert store.mark_batch_uploaded(batch) == 0
    assert seqs(store.next_batch(TELEMETRY, 10)) == [4, 5, 6]
    assert store.mark_batch_uploaded(again) == 3 and store.counts()["pending"] == 0


def test_marking_an_event_that_is_not_stored_changes_nothing(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    store.commit([alarm(1)])
    # the quota may have dropped a row while its batch was on the wire
    assert store.mark_uploaded([alarm(9), alarm(1, boot=2)]) == 0
    assert store.counts()["pending"] == 1


def test_a_kind_no_stream_names_goes_to_the_last_stream(tmp_path: Path) -> None:
    streams = (Stream("urgent", frozenset({"alarm"})), Stream("rest", frozenset({"report", "telemetry"})))
    store = Store.in_dir(tmp_path, streams)
    report = EventRow("elev-001", 1, 3, 0x12, "device.boot", "report", "report", 0, False, {"version": 1})
    odd = EventRow("elev-001", 1, 4, 0x99, "future.kind", "future", "report", 0, False, {})
    store.commit([alarm(1), tele(2), report, odd])
    assert seqs(store.next_batch(0, 10)) == [1]
    assert seqs(store.next_batch(1, 10)) == [2, 3, 4]
    assert store.stream_counts() == {"urgent": {"pending": 1, "dropped": 0},
                                     "rest": {"pending": 3, "dropped": 0}}


def test_device_status_keeps_the_last_word_per_device(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    store.commit([], statuses=[("elev-001", "online"), ("wm-7", "online")])
    store.commit([], statuses=[("elev-001", "offline")])
    assert store.device_status() == {"elev-001": "offline", "wm-7": "online"}


# ---- retention and the quota's tools -------------------------------------------------

def test_retention_deletes_settled_events_only_never_pending_ones(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    store.commit([alarm(1), alarm(2), alarm(3), tele(4), tele(5)], now=100.0)
    store.mark_uploaded([alarm(1), tele(4)], now=1000.0)
    store.mark_rejected([alarm(2)], "400 bad values", now=1000.0)
    store.mark_uploaded([tele(5)], now=9000.0)                 # settled after the cut
    assert store.prune_settled(older_than=5000.0) == 3
    assert [e.seq for e in store.events()] == [3, 5]
    # alarm 3 waited far longer than the cut, but it was never uploaded: it stays
    assert seqs(store.next_batch(ALARMS, 10)) == [3]
    assert store.prune_settled() == 1                          # no cut: every settled event
    assert [e.seq for e in store.events()] == [3]


def test_prune_without_a_cut_goes_oldest_first_within_the_limit(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    store.commit([tele(s) for s in range(1, 7)])
    store.mark_uploaded([tele(s) for s in range(1, 6)])
    assert store.prune_settled(limit=2) == 2
    assert [e.seq for e in store.events()] == [3, 4, 5, 6]


def test_an_event_sent_again_after_retention_deleted_it_is_refused_as_a_replay(tmp_path: Path) -> None:
    # docs/delivery.md: the marks outlive the rows, and a restart
    store = Store.in_dir(tmp_path)
    store.commit([alarm(1), alarm(2), tele(3)])
    store.mark_uploaded([alarm(1), alarm(2)], now=10.0)
    store.prune_settled(older_than=20.0)
    store.close()
    store = Store.in_dir(tmp_path)
    got = store.commit([alarm(1), alarm(2, boot=0), tele(3), alarm(4), tele(2)])
    assert [(e.boot, e.seq) for e in got.replays] == [(1, 1), (0, 2)]
    # tele(3) is still held: a duplicate; tele(2) was never seen and its log (telemetry)
    # lost nothing yet: stored; alarm(4) is above the mark: stored
    assert (got.inserted, got.duplicates) == (2, 1)
    assert seqs(store.next_batch(ALARMS, 10)) == [4]
    assert last_boot(tmp_path, "elev-001") == 1 and last_boot(tmp_path, "nobody") == 0


def test_the_last_boot_of_a_device_is_read_without_writing(tmp_path: Path) -> None:
    assert last_boot(tmp_path, "elev-001") == 0 and not (tmp_path / FILENAME).exists()
    store = Store.in_dir(tmp_path)
    store.commit([alarm(1, boot=7), tele(1, boot=3), alarm(1, device="wm-7", boot=9)])
    store.mark_uploaded([alarm(1, boot=7), tele(1, boot=3)], now=1.0)
    store.prune_settled()
    assert last_boot(tmp_path, "elev-001") == 7                 # while the gateway runs
    store.close()
    assert last_boot(tmp_path, "elev-001") == 7 and last_boot(tmp_path, "wm-7") == 9


def test_telemetry_the_quota_dropped_is_refused_when_sent_again(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    store.commit([tele(1), tele(2), alarm(3)])
    assert store.drop_pending(TELEMETRY, 2) == 2
    got = store.commit([tele(1), tele(2), tele(4), alarm(1, device="wm-7")])
    assert [e.seq for e in got.replays] == [1, 2] and got.inserted == 2


def test_a_row_sqlite_cannot_take_is_refused_alone(tmp_path: Path) -> None:
    # the decoder bounds every number (edge/codec.py); should one slip through, the store
    # refuses that event and keeps the rest of the batch instead of stopping the gateway
    store = Store.in_dir(tmp_path)
    got = store.commit([alarm(1), alarm(2, boot=2**70), alarm(3)])
    assert [e.boot for e in got.unstorable] == [2**70]
    assert got.inserted == 2 and seqs(store.next_batch(ALARMS, 10)) == [1, 3]


def test_the_database_is_private(tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_bytes(b"")
    os.chmod(tmp_path / FILENAME, 0o644)             # made by an older gateway
    store = Store.in_dir(tmp_path)
    store.commit([alarm(1)])
    for name in (FILENAME, FILENAME + "-wal", FILENAME + "-shm"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name


def test_dropping_pending_takes_the_oldest_of_one_stream_and_counts_them_for_good(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    store.commit([tele(1), alarm(2), tele(3), tele(4)])
    assert store.drop_pending(TELEMETRY, 2, now=5.0) == 2
    assert seqs(store.next_batch(TELEMETRY, 10)) == [4]
    assert seqs(store.next_batch(ALARMS, 10)) == [2]
    assert store.drop_pending(TELEMETRY, 5) == 1
    assert store.drop_pending(TELEMETRY, 5) == 0
    store.close()
    again = Store.in_dir(tmp_path)
    assert again.counts()["dropped"] == 3
    assert again.stream_counts()["telemetry"] == {"pending": 0, "dropped": 3}


def test_used_bytes_falls_when_rows_are_deleted_though_the_file_does_not_shrink(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path, DEFAULT_STREAMS)
    store.commit([tele(s) for s in range(3000)])
    full = store.used_bytes()
    store.mark_uploaded([tele(s) for s in range(3000)])
    store.prune_settled()
    assert store.row_count() == 0
    assert store.used_bytes() < full / 4

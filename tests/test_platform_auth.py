"""The platform trusts no one it cannot check (issue 11, findings 1, 9, 12): every request
signed by a provisioned gateway, fresh and never replayed; an upload's Idempotency-Key
bound to its gateway and body; each device's MAC checked when the platform holds its
key, so a forged event cannot take a genuine one's id; bodies bounded however they are
compressed; its files 0600."""
from __future__ import annotations

import base64
import json
import logging
import os
import stat
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest

from gateway import auth
from gateway.cli import main as gateway_cli
from gateway.platform import MAX_BODY, PlatformServer
from test_platform import GATEWAY, SECRET, Client, body, ev, with_platform

FORGER_KEY = "66" * 32                # a key that is not the device's


def refused(p: PlatformServer, reason: str) -> int:
    return p.platform.metrics.get("platform.refused." + reason)


def test_unsigned_requests_are_refused_and_counted(tmp_path: Path, caplog: Any) -> None:
    async def fn(c: Client, p: PlatformServer) -> None:
        anonymous = Client(c.http, c.url, None)
        status, answer = await anonymous.post(body(ev("elev-001", 1)))
        assert status == 401 and answer["error"].startswith("no Authorization header")
        for path in ("/v1/events", "/v1/counts"):       # reads are not open either
            assert (await anonymous.get(path))[0] == 401
        assert refused(p, "missing") == 3
        assert (await c.get("/v1/counts"))[1]["total"] == 0
    with caplog.at_level(logging.WARNING, logger="gateway.platform"):
        with_platform(tmp_path, fn)
    # one line per peer and reason a minute, however many requests
    lines = [r.getMessage() for r in caplog.records if "(HTTP 401, missing)" in r.getMessage()]
    assert len(lines) == 1, lines


def test_bad_signatures_stale_and_replayed_requests_are_refused(tmp_path: Path) -> None:
    async def fn(c: Client, p: PlatformServer) -> None:
        data = json.dumps(body(ev("elev-001", 1))).encode()
        unknown = Client(c.http, c.url, auth.Credentials.new("gw-nobody"))
        assert (await unknown.post(data))[0] == 401 and refused(p, "unknown_gateway") == 1
        wrong = Client(c.http, c.url, auth.Credentials(GATEWAY, "ab" * 32))
        assert (await wrong.post(data))[0] == 401 and refused(p, "bad_signature") == 1
        # signed for one body, sent with another: the digest is in the signature
        headers = auth.sign(c.creds, "POST", "/v1/events", data)
        other = json.dumps(body(ev("elev-001", 2))).encode()
        async with c.http.post(c.url + "/v1/events", data=other, headers=headers) as r:
            assert r.status == 401 and refused(p, "bad_signature") == 2
        # ten minutes old: the gateway's clock is off, or the request was kept for later
        old = auth.sign(c.creds, "POST", "/v1/events", data, now=time.time() - 600)
        async with c.http.post(c.url + "/v1/events", data=data, headers=old) as r:
            answer = await r.json()
            assert r.status == 401 and "check the gateway's clock" in answer["error"]
        # the same signed request twice: the second is a replay
        fresh = auth.sign(c.creds, "POST", "/v1/events", data)
        for want in (200, 401):
            async with c.http.post(c.url + "/v1/events", data=data, headers=fresh) as r:
                assert r.status == want
        assert refused(p, "stale") == 1 and refused(p, "replayed") == 1
        assert (await c.get("/v1/counts"))[1]["total"] == 1
    with_platform(tmp_path, fn)


def test_a_gateway_cannot_upload_in_another_s_name(tmp_path: Path) -> None:
    async def fn(c: Client, p: PlatformServer) -> None:
        status, answer = await c.post(body(ev("elev-001", 1), gateway="gw-other"))
        assert status == 403 and "signed by gateway gw-1" in answer["error"]
        assert refused(p, "wrong_gateway") == 1
    with_platform(tmp_path, fn)


def test_the_idempotency_key_is_bound_to_gateway_and_body(tmp_path: Path) -> None:
    async def fn(c: Client, p: PlatformServer) -> None:
        genuine = json.dumps(body(ev("elev-001", 1, floor=3))).encode()
        forged = json.dumps(body(ev("elev-001", 1, floor=5, secret=FORGER_KEY))).encode()
        key = auth.idempotency_key(GATEWAY, genuine)
        assert key != auth.idempotency_key(GATEWAY, forged) != auth.idempotency_key("gw-2", forged)
        status, answer = await c.post(forged, headers={"Idempotency-Key": key})
        assert status == 400 and answer["error"].startswith("Idempotency-Key: does not match")
        assert await c.post(genuine, headers={"Idempotency-Key": key}) == (200, {"accepted": 1, "duplicates": 0})
    with_platform(tmp_path, fn)


def import_keys(tmp_path: Path, db: Path, **keys: str) -> None:
    path = tmp_path / "keys.json"
    auth.write_private(path, json.dumps({d: {"secret": s} for d, s in keys.items()}))
    assert gateway_cli(["platform", "import-keys", str(path), "--db", str(db)]) == 0


def test_forged_events_cannot_claim_the_ids_of_genuine_ones(tmp_path: Path, caplog: Any) -> None:
    """Finding 1: made-up events with the ids of real future events. With the device's key
    the platform refuses them; the genuine alarm is then stored, verified."""
    async def fn(c: Client, p: PlatformServer) -> None:
        import_keys(tmp_path, p.platform.db.path, **{"elev-001": SECRET})
        forged = [ev("elev-001", seq, "elevator.entrapment", action="raise", floor=1, secret=FORGER_KEY)
                  for seq in range(10, 15)]
        status, answer = await c.post(body(*forged))
        assert status == 400 and "the MAC does not match the key the platform holds" in answer["error"]
        assert refused(p, "mac_bad") == 1
        genuine = ev("elev-001", 12, "elevator.entrapment", action="raise", floor=7, duration_s=61)
        assert await c.post(body(genuine)) == (200, {"accepted": 1, "duplicates": 0})
        stored = (await c.get("/v1/events"))[1]["events"]
        assert [(e["id"], e["values"]["floor"], e["verified"]) for e in stored] == [("elev-001:1:12", 7, "mac_ok")]
        assert p.platform.metrics.get("platform.verified.mac_ok") == 1
    with caplog.at_level(logging.WARNING, logger="gateway.platform"):
        with_platform(tmp_path, fn)
    assert any("mac_bad" in r.getMessage() and "elev-001:1:10" in r.getMessage() for r in caplog.records)


def test_a_genuine_event_replaces_an_unverified_one_of_the_same_id(tmp_path: Path, caplog: Any) -> None:
    """Forged before the platform held the key: stored as no_key. When the genuine event
    comes with the key imported, the genuine one wins."""
    async def fn(c: Client, p: PlatformServer) -> None:
        forged = ev("elev-001", 12, "elevator.entrapment", action="raise", floor=1, secret=FORGER_KEY)
        assert await c.post(body(forged)) == (200, {"accepted": 1, "duplicates": 0})
        assert (await c.get("/v1/events"))[1]["events"][0]["verified"] == "no_key"
        import_keys(tmp_path, p.platform.db.path, **{"elev-001": SECRET})
        genuine = ev("elev-001", 12, "elevator.entrapment", action="raise", floor=7, duration_s=61)
        assert await c.post(body(genuine)) == (200, {"accepted": 1, "duplicates": 0})
        assert p.platform.metrics.get("platform.replaced") == 1
        stored = (await c.get("/v1/events"))[1]["events"]
        assert [(e["values"]["floor"], e["verified"]) for e in stored] == [(7, "mac_ok")]
        assert (await c.get("/v1/counts"))[1]["total"] == 1
        # and now a repeat of either is a duplicate or a refusal, never a replacement
        assert await c.post(body(genuine)) == (200, {"accepted": 0, "duplicates": 1})
        assert (await c.post(body(forged)))[0] == 400
    with caplog.at_level(logging.WARNING, logger="gateway.platform"):
        with_platform(tmp_path, fn)
    assert any("replaced an unverified record" in r.getMessage() and "elev-001:1:12" in r.getMessage()
               for r in caplog.records)


def test_without_keys_a_different_event_under_a_stored_id_is_a_counted_conflict(tmp_path: Path) -> None:
    async def fn(c: Client, p: PlatformServer) -> None:
        assert (await c.post(body(ev("elev-001", 1, floor=3))))[0] == 200
        assert await c.post(body(ev("elev-001", 1, floor=4))) == (200, {"accepted": 0, "duplicates": 1})
        assert p.platform.metrics.get("platform.conflicts") == 1
        assert (await c.get("/v1/events"))[1]["events"][0]["values"]["floor"] == 3
    with_platform(tmp_path, fn)


def gzip_of_zeros(n: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    return b"".join(z.compress(chunk) for _ in range(n >> 20)) + z.flush()


def test_a_gzip_bomb_is_refused_with_bounded_memory(tmp_path: Path, caplog: Any) -> None:
    """Finding 9: a 261 KB body cost about 220 MiB before its 413. Now at most MAX_BODY of
    it is ever inflated."""
    bomb = gzip_of_zeros(256 << 20)
    assert len(bomb) < 300_000

    async def fn(c: Client, p: PlatformServer) -> None:
        tracemalloc.start()
        try:
            status, answer = await c.post(bomb, headers={"Content-Encoding": "gzip"})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert status == 413 and "once decompressed" in answer["error"]
        assert peak < 3 * MAX_BODY, "peak %.1f MiB" % (peak / 2 ** 20)
        # too large on the wire: refused before anything is read into a handler
        status, _ = await c.post(bytes(MAX_BODY + 1))
        assert status == 413
        assert refused(p, "too_large") == 2
        broken = gzip_of_zeros(1 << 20)[:-20]
        status, answer = await c.post(broken, headers={"Content-Encoding": "gzip"})
        assert status == 400 and answer["error"].startswith("body:")
    with caplog.at_level(logging.WARNING, logger="gateway.platform"):
        with_platform(tmp_path, fn)
    assert any("too_large" in r.getMessage() for r in caplog.records)


def test_nonce_memory_is_bounded_and_forgets_only_what_has_expired() -> None:
    v = auth.Verifier(max_skew=300, capacity=2)
    creds = auth.Credentials.new("gw-1")

    def check(at: float) -> str:
        fields = auth.parse(auth.sign(creds, "GET", "/v1/counts", now=at)["Authorization"])
        return v.check(fields, creds.secret, "GET", "/v1/counts", b"", now=at)
    check(1000)
    check(1000)
    with pytest.raises(auth.AuthError) as e:
        check(1000)                 # full: refused (429, retried), no nonce forgotten early
    assert e.value.reason == "busy"
    assert check(1301) == "gw-1"    # the first two have expired: their timestamps are stale now


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_platform_s_files_are_private(tmp_path: Path, capsys: Any) -> None:
    """Finding 12: platform.sqlite was 0644. The database (and its WAL), a gateway's
    credentials and exported device keys are 0600; the secrets are never printed."""
    db = tmp_path / "platform.sqlite"
    creds_file = tmp_path / "gw-1.json"
    assert gateway_cli(["platform", "add-gateway", "gw-1", "--db", str(db), "--out", str(creds_file)]) == 0
    assert gateway_cli(["devices", "add", "elev-001", "--profile", "elevator", "--secret", SECRET,
                        "--data", str(tmp_path / "gw")]) == 0
    keys = tmp_path / "keys.json"
    assert gateway_cli(["devices", "export-keys", "--data", str(tmp_path / "gw"), "--out", str(keys)]) == 0
    assert gateway_cli(["platform", "import-keys", str(keys), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    creds = auth.Credentials.load(creds_file)
    assert creds.secret not in out and SECRET not in out
    assert json.loads(keys.read_text()) == {"elev-001": {"secret": SECRET}}
    files = [db, creds_file, keys] + [p for p in (Path(str(db) + "-wal"), Path(str(db) + "-shm")) if p.exists()]
    assert {str(p): mode(p) for p in files} == {str(p): 0o600 for p in files}
    # a gateway will not use credentials others can read
    os.chmod(creds_file, 0o644)
    with pytest.raises(auth.CredentialsError, match="chmod 600"):
        auth.Credentials.load(creds_file)
    # a second add-gateway of the same id is refused; --replace gives a new secret
    assert gateway_cli(["platform", "add-gateway", "gw-1", "--db", str(db), "--out", str(creds_file)]) == 2
    assert "--replace" in capsys.readouterr().err


def test_payload_is_kept_by_the_gateway_and_sent(tmp_path: Path) -> None:
    """The upload carries each event's signed bytes, as the gateway received them."""
    from gateway.store import EventRow, Store
    from gateway.uplink import upload_body
    from test_platform import payload
    raw = payload("elev-001", 3, floor=3)
    store = Store.in_dir(tmp_path)
    e = EventRow("elev-001", 1, 3, 1, "telemetry.elevator", "telemetry", "report", 1_700_000_000, True,
                 {"floor": 3}, raw)
    store.commit([e])
    sent = json.loads(upload_body("gw-1", store.next_batch(1, 10)))["events"][0]
    assert base64.b64decode(sent["payload"]) == raw



def test_after_a_rotation_the_previous_key_is_good_until_its_grace_ends(tmp_path: Path) -> None:
    """Events a device signed before it got its new key still verify at the platform, as
    they do at the gateway; once the grace period is over they are refused."""
    new = "77" * 32
    data = str(tmp_path / "gw")
    for secret, extra in ((SECRET, []), (new, ["--replace"])):
        assert gateway_cli(["devices", "add", "elev-001", "--profile", "elevator", "--secret", secret,
                            "--data", data, *extra]) == 0
    keys = tmp_path / "keys.json"
    assert gateway_cli(["devices", "export-keys", "--data", data, "--out", str(keys)]) == 0
    exported = json.loads(keys.read_text())["elev-001"]
    assert exported["secret"] == new and exported["previous"]["secret"] == SECRET

    async def fn(c: Client, p: PlatformServer) -> None:
        db = str(p.platform.db.path)
        assert gateway_cli(["platform", "import-keys", str(keys), "--db", db]) == 0
        assert (await c.post(body(ev("elev-001", 1), ev("elev-001", 2, secret=new))))[0] == 200
        assert [e["verified"] for e in (await c.get("/v1/events"))[1]["events"]] == ["mac_ok", "mac_ok"]
        exported["previous"]["until"] = time.time() - 1
        auth.write_private(keys, json.dumps({"elev-001": exported}))
        assert gateway_cli(["platform", "import-keys", str(keys), "--db", db]) == 0
        assert (await c.post(body(ev("elev-001", 3))))[0] == 400
        assert refused(p, "mac_bad") == 1
    with_platform(tmp_path, fn)

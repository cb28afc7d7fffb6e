"""gateway/registry.py: devices.json as the gateway reads and writes it. Saved devices come
back after a reload, a rotated secret replaces the old one (signer included; the old one
still verifies for a grace period), the file is
mode 0600 and written whole, a running gateway's refresh() sees edits and survives a bad
one, and a bad file is refused with the file, the device and the field named.
(The device id rule has its own tests: tests/test_ids.py.)"""
from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from edge import codec
from edge.codes import ACTIONS, code_of
from gateway.registry import FILENAME, GRACE_S, GatewaySigner, Registry, RegistryError

SECRET = "ab" * 32
OTHER = "cd" * 16


def event(secret_hex: str, seq: int = 1, device: str = "elev-001") -> bytes:
    code = code_of("device.boot")
    return codec.encode(codec.Signer(bytes.fromhex(secret_hex), device), code, ACTIONS.index("report"),
                        1, seq, 1_700_000_000, codec.values_of(code, {"version": 1}), True)


def accepts(reg: Registry, device_id: str, payload: bytes, now: float | None = None) -> bool:
    for signer in (reg.signer(device_id), reg.previous_signer(device_id, now)):
        try:
            if signer is not None and codec.decode(payload, signer):
                return True
        except codec.CodecError:
            pass
    return False


@pytest.mark.parametrize("key", [b"k" * 16, bytes(range(64)), b"x" * 100])   # short, one block, hashed first
def test_the_gateway_s_signer_makes_and_checks_the_board_s_mac(key: bytes) -> None:
    board, gateway = codec.Signer(key, "elev-001"), GatewaySigner(key, "elev-001")
    for msg in (b"", b"ack\xa2\x01\x02\x03", bytes(range(200))):
        mac = board.mac(msg)
        assert gateway.mac(msg) == mac and gateway.check(msg, mac)          # again: the pad states are copied
        assert not gateway.check(msg, mac[:-1] + bytes((mac[-1] ^ 1,)))
        assert not gateway.check(msg, mac[:-1]) and not gateway.check(msg, mac + b"\0")
    assert GatewaySigner(key, "elev-002").mac(b"x") != gateway.mac(b"x")    # bound to the device id


def write(path: Path, data: object) -> None:
    path.write_text(data if isinstance(data, str) else json.dumps(data))


# ---- add, save, reload ---------------------------------------------------------------

def test_saved_devices_come_back_after_a_reload(tmp_path: Path) -> None:
    reg = Registry.in_dir(tmp_path)
    reg.add("elev-001", "elevator", SECRET.upper(), site="tower B")
    reg.add("wm-7", "water_meter", OTHER)
    reg.save()
    again = Registry.in_dir(tmp_path)
    assert [(d.device_id, d.profile, d.secret, d.extra) for d in again.devices()] == [
        ("elev-001", "elevator", SECRET, {"site": "tower B"}), ("wm-7", "water_meter", OTHER, {})]
    assert "wm-7" in again and len(again) == 2 and again.get("nobody") is None
    # the format docs/gateway.md shows, readable by anything that reads JSON
    assert json.loads((tmp_path / FILENAME).read_text())["wm-7"] == {"secret": OTHER, "profile": "water_meter"}


def test_the_secret_in_the_file_verifies_what_the_device_signs(tmp_path: Path) -> None:
    reg = Registry.in_dir(tmp_path)
    reg.add("elev-001", "elevator", SECRET)
    reg.save()
    again = Registry.in_dir(tmp_path)
    assert accepts(again, "elev-001", event(SECRET))
    assert not accepts(again, "elev-001", event(OTHER))
    assert not accepts(again, "elev-002", event(SECRET))


def test_the_mac_binds_the_device_id_even_under_a_shared_key(tmp_path: Path) -> None:
    reg = Registry.in_dir(tmp_path)
    reg.add("elev-001", "elevator", SECRET)
    reg.add("elev-002", "elevator", SECRET)
    assert accepts(reg, "elev-002", event(SECRET, device="elev-002"))
    assert not accepts(reg, "elev-002", event(SECRET, device="elev-001"))


def test_a_generated_secret_is_long_and_new_for_each_device(tmp_path: Path) -> None:
    reg = Registry.in_dir(tmp_path)
    a = reg.add("elev-001", "elevator")
    b = reg.add("elev-002", "elevator")
    assert len(bytes.fromhex(a.secret)) == 32 and a.secret != b.secret
    assert accepts(reg, "elev-001", event(a.secret))


def test_adding_a_device_twice_is_refused_unless_replacing(tmp_path: Path) -> None:
    reg = Registry.in_dir(tmp_path)
    reg.add("elev-001", "elevator", SECRET)
    with pytest.raises(RegistryError, match=r"device 'elev-001' is already in .*devices.json"):
        reg.add("elev-001", "elevator", OTHER)
    assert reg.get("elev-001").secret == SECRET


def test_a_rotated_out_secret_verifies_for_the_grace_period_only(tmp_path: Path) -> None:
    reg = Registry.in_dir(tmp_path)
    reg.add("elev-001", "elevator", SECRET)
    assert accepts(reg, "elev-001", event(SECRET))          # its signer is now cached
    reg.add("elev-001", "elevator", OTHER, replace=True)
    assert reg.signer("elev-001") is not None and accepts(reg, "elev-001", event(OTHER))
    assert accepts(reg, "elev-001", event(SECRET))          # still in the device's outbox
    until = reg.get("elev-001").previous_until
    assert abs(until - time.time() - GRACE_S) < 60
    assert not accepts(reg, "elev-001", event(SECRET), now=until)
    reg.save()
    again = Registry.in_dir(tmp_path)
    assert again.get("elev-001").secret == OTHER and accepts(again, "elev-001", event(SECRET))
    assert json.loads((tmp_path / FILENAME).read_text())["elev-001"]["previous"] == {"secret": SECRET,
                                                                                      "until": until}
    # the same secret again is no rotation; a rotation without grace (a leaked key) retires it at once
    again.add("elev-001", "elevator", OTHER, replace=True)
    assert again.get("elev-001").previous == SECRET
    again.add("elev-001", "elevator", SECRET, replace=True, grace_s=0)
    assert not accepts(again, "elev-001", event(OTHER)) and again.previous_signer("elev-001") is None


@pytest.mark.parametrize("secret,message", [
    ("not hex at all", "must be an even number of hex digits, at least 32"),
    ("ab" * 15, "at least 32"),
    (" " * 40, "hex digits"),                    # bytes.fromhex would make it an empty key
    ("ab " * 16, "hex digits"),
    ("a" * 33, "even number"),
])
def test_a_weak_or_garbled_secret_is_refused(tmp_path: Path, secret: str, message: str) -> None:
    reg = Registry.in_dir(tmp_path)
    with pytest.raises(RegistryError, match=message):
        reg.add("elev-001", "elevator", secret)
    assert len(reg) == 0


@pytest.mark.parametrize("profile", ["", "toaster"])
def test_a_profile_the_agent_does_not_have_is_refused(tmp_path: Path, profile: str) -> None:
    reg = Registry.in_dir(tmp_path)
    with pytest.raises(RegistryError, match="profile"):
        reg.add("elev-001", profile, SECRET)
    assert len(reg) == 0
    write(tmp_path / FILENAME, {"elev-001": {"secret": SECRET, "profile": profile}})
    with pytest.raises(RegistryError, match=r"devices.json: device 'elev-001': .*profile"):
        Registry.in_dir(tmp_path)


def test_a_missing_file_is_an_empty_registry_and_save_creates_the_folder(tmp_path: Path) -> None:
    data = tmp_path / "new" / "gw"
    reg = Registry.in_dir(data)
    assert len(reg) == 0 and reg.devices() == []
    reg.add("elev-001", "elevator", SECRET)
    reg.save()
    assert (data / FILENAME).is_file()


# ---- the file on disk ----------------------------------------------------------------

def test_the_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        reg = Registry.in_dir(tmp_path)
        reg.add("elev-001", "elevator", SECRET)
        reg.save()
        assert stat.S_IMODE((tmp_path / FILENAME).stat().st_mode) == 0o600
        reg.add("elev-001", "elevator", OTHER, replace=True)     # rewritten, still private
        reg.save()
        assert stat.S_IMODE((tmp_path / FILENAME).stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_saving_replaces_the_file_whole_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    reg = Registry.in_dir(tmp_path)
    reg.add("elev-001", "elevator", SECRET)
    reg.save()
    before = (tmp_path / FILENAME).stat().st_ino
    reg.add("elev-002", "elevator", OTHER)
    reg.save()
    # a new file renamed over the old one: a reader sees the old or the new, never half
    assert (tmp_path / FILENAME).stat().st_ino != before
    assert sorted(os.listdir(tmp_path)) == [FILENAME]


# ---- refresh: edits while the gateway runs -------------------------------------------

def test_refresh_sees_devices_added_rotated_and_removed_by_another_writer(tmp_path: Path) -> None:
    seed = Registry.in_dir(tmp_path)
    seed.add("elev-001", "elevator", SECRET)
    seed.add("elev-002", "elevator", SECRET)
    seed.save()
    gateway = Registry.in_dir(tmp_path)
    assert accepts(gateway, "elev-001", event(SECRET))
    assert gateway.refresh() is False                        # nothing changed on disk

    cli = Registry.in_dir(tmp_path)                          # `edge-gateway devices add`, provisioning
    cli.add("wm-7", "water_meter", OTHER)
    cli.add("elev-001", "elevator", OTHER, replace=True)
    cli.save()
    assert gateway.refresh() is True
    assert accepts(gateway, "wm-7", event(OTHER, device="wm-7"))
    assert accepts(gateway, "elev-001", event(OTHER)) and gateway.previous_signer("elev-001") is not None

    data = json.loads((tmp_path / FILENAME).read_text())     # a device taken out by hand
    del data["elev-002"]
    write(tmp_path / FILENAME, data)
    assert gateway.refresh() is True
    assert "elev-002" not in gateway and gateway.signer("elev-002") is None


def test_a_broken_edit_keeps_the_devices_loaded_before(tmp_path: Path) -> None:
    reg = Registry.in_dir(tmp_path)
    reg.add("elev-001", "elevator", SECRET)
    reg.save()
    gateway = Registry.in_dir(tmp_path)
    write(tmp_path / FILENAME, '{"elev-001": {"secret": "%s", "profile": "elevator"},' % SECRET)
    with pytest.raises(RegistryError, match="not valid JSON"):
        gateway.refresh()
    assert accepts(gateway, "elev-001", event(SECRET))
    write(tmp_path / FILENAME, {"elev-001": {"secret": OTHER, "profile": "elevator"}})
    assert gateway.refresh() is True
    assert accepts(gateway, "elev-001", event(OTHER))


def test_a_deleted_file_empties_the_registry_on_refresh(tmp_path: Path) -> None:
    reg = Registry.in_dir(tmp_path)
    reg.add("elev-001", "elevator", SECRET)
    reg.save()
    (tmp_path / FILENAME).unlink()
    assert reg.refresh() is True
    assert len(reg) == 0 and reg.signer("elev-001") is None


# ---- bad files -----------------------------------------------------------------------

def test_a_file_that_is_not_json_names_the_file_line_and_column(tmp_path: Path) -> None:
    write(tmp_path / FILENAME, '{\n  "elev-001": {"secret": "%s"\n  "profile": "elevator"}\n}\n' % SECRET)
    with pytest.raises(RegistryError) as e:
        Registry.in_dir(tmp_path)
    assert str(tmp_path / FILENAME) in str(e.value)
    assert "not valid JSON" in str(e.value) and "line 3 column 3" in str(e.value)


@pytest.mark.parametrize("data,message", [
    ([], "the top level must be an object"),
    ({"elev-001": "ab" * 32}, "device 'elev-001': must be an object with secret and profile"),
    ({"elev-001": {"profile": "elevator"}}, "device 'elev-001': field 'secret' is missing"),
    ({"elev-001": {"secret": 1234, "profile": "elevator"}},
     "device 'elev-001': field 'secret' is missing or not a string"),
    ({"elev-001": {"secret": "zz" * 16, "profile": "elevator"}}, "device 'elev-001': secret must be an even"),
    ({"elev-001": {"secret": "ab" * 8, "profile": "elevator"}}, "device 'elev-001': secret must be an even"),
    ({"elev-001": {"secret": SECRET, "profile": "elevator", "previous": {"secret": "ab"}}},
     "device 'elev-001': field 'previous' must be"),
    ({"elev-001": {"secret": SECRET}}, "device 'elev-001': field 'profile' is missing"),
])
def test_a_bad_entry_names_the_file_the_device_and_the_field(tmp_path: Path, data: object, message: str) -> None:
    write(tmp_path / FILENAME, data)
    with pytest.raises(RegistryError) as e:
        Registry.in_dir(tmp_path)
    assert str(e.value).startswith(str(tmp_path / FILENAME) + ": ")
    assert message in str(e.value)


def test_one_bad_entry_refuses_the_whole_file(tmp_path: Path) -> None:
    # half a registry would lock out devices without saying so
    write(tmp_path / FILENAME, {"elev-001": {"secret": SECRET, "profile": "elevator"},
                                "elev-002": {"secret": "ab", "profile": "elevator"}})
    with pytest.raises(RegistryError, match="elev-002"):
        Registry.in_dir(tmp_path)


def test_a_file_that_cannot_be_read_says_so(tmp_path: Path) -> None:
    (tmp_path / FILENAME).mkdir()
    with pytest.raises(RegistryError, match=r"devices.json: cannot read: Is a directory"):
        Registry.in_dir(tmp_path)


def test_a_file_that_is_not_utf8_names_the_file_and_what_to_do(tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_bytes(b'{"elev-001": {"secret": "\xff\xfe", "profile": "elevator"}}')
    with pytest.raises(RegistryError) as e:
        Registry.in_dir(tmp_path)
    assert str(e.value).startswith(str(tmp_path / FILENAME) + ": not UTF-8 (byte 0xff at offset 25)")
    assert "restore the file from a backup" in str(e.value)

"""edgectl flash: the exact esptool command it builds for each board, the checks on the
image before esptool runs, and esptool's failures in plain words (a real esptool run
against a pty where no chip answers)."""
import json
import os
import subprocess
import sys

import pytest

from tools.common import boards
from tools import flash
from tools.common import runtime
from tools.common.report import StepFailed
from tools.testbench.vbus import VirtualBus


def image(path, size=300 * 1024, magic=0xE9):
    with open(path, "wb") as fh:
        fh.write(bytes([magic]) + os.urandom(size - 1))
    return str(path)


def edgectl(*args):
    return subprocess.run([sys.executable, "-m", "tools.edgectl", *args], capture_output=True, text=True,
                          cwd=runtime.ROOT, timeout=120)


@pytest.mark.parametrize("board,chip,offset", [("esp32-devkitc", "esp32", "0x1000"), ("esp32-s3", "esp32s3", "0x0")])
def test_the_esptool_command_line(board, chip, offset):
    argv = flash.build_argv(boards.load_board(board), "/dev/ttyUSB0", "fw.bin")
    assert argv[len(flash.esptool()):] == ["--chip", chip, "--port", "/dev/ttyUSB0", "--baud", "460800",
                                           "--connect-attempts", "7", "write-flash", "--erase-all", offset, "fw.bin"]
    keep = flash.build_argv(boards.load_board(board), "/dev/ttyUSB0", "fw.bin", baud=115200, erase=False)
    assert "--erase-all" not in keep and keep[keep.index("--baud") + 1] == "115200"


def test_dry_run_prints_the_command(tmp_path):
    fw = image(tmp_path / "ESP32_GENERIC.bin")
    res = edgectl("flash", "--board", "esp32-devkitc", "--firmware", fw, "--port", "/dev/ttyUSB0",
                  "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["argv"][-3:] == ["--erase-all", "0x1000", fw]


def test_images_that_cannot_be_right_are_refused(tmp_path):
    with pytest.raises(StepFailed, match="no firmware file at"):
        flash.check_image(str(tmp_path / "missing.bin"))
    with pytest.raises(StepFailed, match="not an ESP32 firmware image"):
        flash.check_image(image(tmp_path / "fw.uf2", magic=0x55))
    with pytest.raises(StepFailed, match="only 1000 bytes"):
        flash.check_image(image(tmp_path / "short.bin", size=1000))
    with pytest.raises(StepFailed, match="not flashed with esptool"):
        flash.build_argv(boards.load_board("raspberry-pi"), "/dev/ttyUSB0", "fw.bin")


def test_esptool_failures_are_told_in_plain_words(tmp_path):
    fw = image(tmp_path / "fw.bin")
    # a real esptool run against a pty where no chip answers
    with VirtualBus(str(tmp_path / "bus")) as bus:
        argv = flash.build_argv(boards.load_board("esp32-devkitc"), bus.a, fw, attempts=1)
        with pytest.raises(StepFailed) as failed:
            flash.run_esptool(argv, bus.a, "esp32", lambda *a: None)
    assert "the board did not answer on %s: it is not in its bootloader. Hold BOOT" % bus.a in str(failed.value)
    res = edgectl("flash", "--board", "esp32-s3", "--firmware", fw, "--port", str(tmp_path / "ttyUSB7"))
    assert res.returncode == 1
    assert "there is no serial port %s: plug the board in" % (tmp_path / "ttyUSB7") in res.stderr
    assert "the chip on /dev/x is not the esp32 this board has" in flash.explain(
        "A fatal error occurred: This chip is ESP32-S3, not ESP32. Wrong --chip argument?", "/dev/x", "esp32")
    assert "dialout" in flash.explain("could not open port /dev/x: [Errno 13] Permission denied", "/dev/x", "esp32")


def test_progress_is_read_from_esptools_output(tmp_path):
    script = tmp_path / "fake_esptool.py"
    script.write_text("import sys\n"
                      "for p in (0, 35.2, 71, 100):\n"
                      "    sys.stdout.write('Writing at 0x00001000 [====] %5.1f%% 1/2 bytes...\\r' % p)\n"
                      "print()\n"
                      "print('Hash of data verified.')\n")
    seen = []
    flash.run_esptool([sys.executable, str(script)], "/dev/x", "esp32", lambda done, total, note: seen.append(done))
    assert seen == [0, 35, 71, 100]

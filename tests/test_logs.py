"""edgectl logs reads a console without writing to it, line by line, with --grep."""
import argparse
import os
import threading
import time

from tools import logs
from tools.testbench.vbus import VirtualBus


def test_logs_follows_lines_and_filters(tmp_path):
    with VirtualBus(str(tmp_path / "bus")) as bus:
        board = os.open(bus.b, os.O_RDWR | os.O_NOCTTY)

        def talk():
            time.sleep(0.3)
            os.write(board, b"agent e1: profile elevator\r\nbus fault: timeout (1 failed polls)\r\npartial")
        threading.Thread(target=talk, daemon=True).start()
        seen = []
        rc = logs.run(argparse.Namespace(port=bus.a, baud=115200, seconds=1.5, grep="fault", timestamps=False),
                      out=seen.append)
        matched, lines = logs.wait_for(bus.a, "mqtt", 0.3)
        os.close(board)
    assert rc == 0
    assert seen == ["bus fault: timeout (1 failed polls)"]
    assert not matched and lines == []


def test_logs_says_what_to_check_when_the_port_is_missing(tmp_path, capsys):
    rc = logs.run(argparse.Namespace(port=str(tmp_path / "ttyUSB9"), baud=115200, seconds=1, grep=None,
                                     timestamps=False))
    assert rc == 1
    assert "cannot open %s" % (tmp_path / "ttyUSB9") in capsys.readouterr().err

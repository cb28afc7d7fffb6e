"""Headless Chromium driven over the DevTools protocol, for the tests that look at the
status page as a person would: open it at a window size, wait until something shows,
take a screenshot. Debian's `chromium`; it is installed with apt-get when missing and we
are root, else the caller is told how (never skipped). Started and stopped by its PID.

    with Browser(tmp_path / "chromium", 390, 844, mobile=True) as b:
        b.open(url)
        b.wait_for("document.querySelector('[data-status=offline]') !== null", 10)
        b.screenshot(tmp_path / "offline.png")
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tools.common.procs import stop

READY_S = 30.0


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or answered a command with an error."""


def chromium() -> str:
    """The chromium binary; installed with apt-get when missing and we are root."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        raise BrowserError("chromium is not installed: run `sudo apt-get install -y chromium`")
    done = subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, text=True)
    if done.returncode:
        subprocess.run(["apt-get", "update"], capture_output=True)
        done = subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, text=True)
    found = shutil.which("chromium")
    if not found:
        raise BrowserError("apt-get install chromium failed:\n" + (done.stderr or done.stdout)[-2000:])
    return found


class Browser:
    """One headless Chromium with one page, at width x height (mobile: a phone's touch
    screen and viewport rules). headers: sent with every request, e.g. a login."""

    def __init__(self, workdir: str | Path, width: int, height: int, mobile: bool = False,
                 headers: dict[str, str] | None = None) -> None:
        from websockets.sync.client import connect
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        profile = self.workdir / "profile"
        self.log = open(self.workdir / "chromium.log", "ab")
        args = [chromium(), "--headless=new", "--remote-debugging-port=0", "--user-data-dir=%s" % profile,
                "--window-size=%d,%d" % (width, height), "--no-first-run", "--no-default-browser-check",
                "--disable-gpu", "--disable-extensions", "--hide-scrollbars", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")      # Chromium refuses to run as root with its sandbox
        self.proc: subprocess.Popen | None = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self._ids = itertools.count(1)
        try:
            port = self._devtools_port(profile / "DevToolsActivePort")
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=10) as r:
                page = next(t for t in json.load(r) if t["type"] == "page")
            self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=10)
            self.call("Page.enable")
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                      deviceScaleFactor=2 if mobile else 1, mobile=mobile)
            if mobile:
                self.call("Emulation.setTouchEmulationEnabled", enabled=True)
            if headers:
                self.call("Network.enable")
                self.call("Network.setExtraHTTPHeaders", headers=headers)
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, path: Path) -> int:
        """Chromium writes its DevTools port into the profile once it listens."""
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BrowserError("chromium exited with %s; see %s" % (self.proc.returncode, self.log.name))
            if path.exists() and path.read_text().strip():
                return int(path.read_text().split()[0])
            time.sleep(0.1)
        raise BrowserError("chromium did not open its DevTools port within %.0f s" % READY_S)

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """One DevTools command and its result (events that arrive meanwhile are dropped)."""
        mid = next(self._ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(max(0.1, deadline - time.monotonic())))
            if message.get("id") == mid:
                if "error" in message:
                    raise BrowserError("%s: %s" % (method, message["error"]))
                return message.get("result", {})

    def open(self, url: str) -> None:
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError("cannot open %s: %s" % (url, result["errorText"]))

    def evaluate(self, expression: str) -> Any:
        """A JavaScript expression's value in the page (JSON values only)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError("%s: %s" % (expression, result["exceptionDetails"].get("text")))
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float) -> None:
        """Until the expression is true in the page; BrowserError naming it after timeout."""
        deadline = time.monotonic() + timeout
        while not self.evaluate("Boolean(%s)" % expression):
            if time.monotonic() > deadline:
                raise BrowserError("not within %.0f s: %s" % (timeout, expression))
            time.sleep(0.2)

    def screenshot(self, path: str | Path) -> Path:
        """A PNG of the whole page, scrolled parts included."""
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        stop(self.proc, 10)
        self.proc = None
        self.log.close()

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

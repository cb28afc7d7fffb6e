"""Where the agent goes and what goes there, for `edgectl provision`: the agent built
for a board (.mpy, or the sources for CPython), the files a board gets, and the two kinds
of target, a MicroPython board over mpremote or this machine (a Raspberry Pi).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

from tools.common import credentials as acl, runtime
from tools.common import boards
from tools.testbench import vboard
from tools.common.devconfig import CA_FILE, PI_ETC
from tools.common.report import StepFailed


def build_agent(spec: dict, board_name: str, build_dir: str, step) -> tuple[str, int]:
    """The agent as shipped: .mpy under build/<board>/lib and a freeze manifest.py; for
    CPython (a Pi) the sources themselves."""
    out = os.path.join(build_dir, board_name)
    lib = os.path.join(out, "lib")
    sources = [os.path.join(runtime.ROOT, rel) for rel in runtime.board_modules()]
    newest = max(os.path.getmtime(s) for s in sources)
    stamp = os.path.join(out, ".built")
    if not (os.path.exists(stamp) and os.path.getmtime(stamp) >= newest and os.path.isdir(lib)):
        shutil.rmtree(lib, ignore_errors=True)
        errors: list[BaseException] = []
        work = _copy_sources if spec["port"] == "cpython" else _compile
        worker = threading.Thread(target=lambda: work(lib, errors))
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
            step.progress(sum(len(fs) for _, _, fs in os.walk(lib)), len(sources), "modules")
        if errors:
            raise StepFailed("mpy-cross failed: %s" % errors[0])
        open(stamp, "w").close()
    manifest = spec.get("manifest")
    if manifest:
        with open(os.path.join(runtime.ROOT, "boards", manifest)) as fh:
            text = fh.read()
        # the board's modules, and only those, frozen from this checkout
        files = [os.path.relpath(rel, "edge") for rel in runtime.board_modules()]
        with open(os.path.join(out, "manifest.py"), "w") as fh:
            fh.write(text + 'package("edge", files=%r, base_path=%r)\n' % (files, runtime.ROOT))
    return out, len(sources)


def _compile(lib: str, errors: list) -> None:
    try:
        runtime.compile_agent(lib)
    except Exception as e:   # reported by the caller, in the build step
        errors.append(e)


def _copy_sources(lib: str, errors: list) -> None:
    for rel in runtime.board_modules():
        os.makedirs(os.path.join(lib, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(os.path.join(runtime.ROOT, rel), os.path.join(lib, rel))


def main_py(spec: dict) -> str:
    state = spec.get("flash", {}).get("state_dir", "state")
    return ("# The agent's entry point on a %s board, written by edgectl provision.\n"
            "from edge import agent\n"
            "agent.main(['main.py', 'config.json', %r])\n" % (spec["board"], state))


def files_for(out: str, spec: dict, cfg: dict, wifi: dict | None = None,
              broker_ca: str | None = None) -> tuple[list[tuple[str, str]], str]:
    """(local, board path) pairs; files with secrets go through a private temp dir (0700).
    broker_ca: the site CA (PEM), which goes beside the config as DER."""
    tmp = tempfile.mkdtemp(prefix="provision-")
    if broker_ca:
        try:
            der = acl.der_certificate(broker_ca)
        except ValueError as e:
            raise StepFailed("--broker-ca %s" % e) from None
        with open(os.path.join(tmp, CA_FILE), "wb") as fh:
            fh.write(der)
    cfg_path = os.path.join(tmp, "config.json")
    acl.write_private(cfg_path, json.dumps(cfg, indent=1))
    files = []
    if spec.get("boot"):
        files.append((os.path.join(runtime.ROOT, "boards", spec["boot"]), "boot.py"))
    if wifi:
        acl.write_private(os.path.join(tmp, "wifi.json"), json.dumps(wifi))
        files.append((os.path.join(tmp, "wifi.json"), "wifi.json"))
    lib = os.path.join(out, "lib")
    for d, _, fs in os.walk(lib):
        for f in sorted(fs):
            src = os.path.join(d, f)
            files.append((src, "lib/" + os.path.relpath(src, lib)))
    if spec["port"] == "cpython":
        files.append((os.path.join(runtime.ROOT, "boards", spec["service"]), spec["service"]))
    else:
        main = os.path.join(tmp, "main.py")
        with open(main, "w") as fh:
            fh.write(main_py(spec))
        files.append((main, "main.py"))
    if broker_ca:
        files.append((os.path.join(tmp, CA_FILE), CA_FILE))
    files.append((cfg_path, "config.json"))
    return files, tmp


class Target:
    """Where the agent goes: a MicroPython board over mpremote, or this machine (a Pi)."""
    name = ""

    def read_config(self) -> dict | None: ...
    def deploy(self, files: list[tuple[str, str]], progress) -> int: ...
    def selftest(self) -> dict: ...
    def start(self) -> tuple[str, bool]:
        """Start the agent: what was done, and whether the agent is now starting."""
        raise NotImplementedError


class MpremoteTarget(Target):
    def __init__(self, port: str, spec: dict) -> None:
        self.port = port
        self.spec = spec
        self.mp = boards.Mpremote(port)
        self.name = port

    def read_config(self) -> dict | None:
        text = self.mp.cat("config.json")
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None

    def deploy(self, files, progress) -> int:
        return self.mp.put(files, progress)

    def selftest(self) -> dict:
        # boot.py joins the Wi-Fi (ESP32) as it will at power-up
        boot = "import boot\n" if self.spec.get("boot") else ""
        out = self.mp.exec(boards.UNLOAD + boot + "import edge.selftest as t; t.main()", timeout=60)
        return _selftest_line(out)

    def start(self) -> tuple[str, bool]:
        virtual = vboard.info_for_console(self.port) if self.spec["port"] == "unix" else None
        if virtual:
            vboard.reset_virtual(virtual)
            return "virtual board power-cycled; main.py starts the agent", True
        self.mp.run(["reset"], timeout=20)
        return "board reset; main.py starts the agent", True


class LocalTarget(Target):
    """A Raspberry Pi provisioning itself: the agent under CPython, run by systemd."""

    def __init__(self, root: str, spec: dict) -> None:
        self.root = root
        self.spec = spec
        self.name = "this machine"
        self.etc = os.path.join(root, PI_ETC.lstrip("/"))
        self.opt = os.path.join(root, "opt/citynet-edge")
        self.unit = os.path.join(root, "etc/systemd/system", spec["service"])

    def read_config(self) -> dict | None:
        try:
            return json.load(open(os.path.join(self.etc, "config.json")))
        except (OSError, ValueError):
            return None

    def deploy(self, files, progress) -> int:
        copied = 0
        for i, (src, dest) in enumerate(files):
            if dest in ("config.json", CA_FILE):
                path = os.path.join(self.etc, dest)
            elif dest.endswith(".service"):
                path = self.unit
            else:
                path = os.path.join(self.opt, dest)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not (os.path.exists(path) and open(path, "rb").read() == open(src, "rb").read()):
                shutil.copyfile(src, path + ".tmp")
                os.chmod(path + ".tmp", 0o600 if dest == "config.json" else 0o644)
                os.replace(path + ".tmp", path)
                copied += 1
            progress(i + 1, len(files))
        return copied

    def selftest(self) -> dict:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(self.opt, "lib"), self.opt]))
        proc = subprocess.run([sys.executable, "-m", "edge.selftest", os.path.join(self.etc, "config.json")],
                              capture_output=True, text=True, env=env, cwd=self.opt, timeout=45)
        return _selftest_line(proc.stdout + proc.stderr)

    def start(self) -> tuple[str, bool]:
        if self.root == "/" and shutil.which("systemctl"):
            subprocess.run(["systemctl", "daemon-reload"], check=True)
            subprocess.run(["systemctl", "enable", "--now", self.spec["service"]], check=True)
            subprocess.run(["systemctl", "restart", self.spec["service"]], check=True)
            return "systemd unit %s enabled and (re)started" % self.spec["service"], True
        return "installed under %s; start it with: systemctl enable --now %s" % (
            self.root, self.spec["service"]), False


def _selftest_line(output: str) -> dict:
    for line in output.splitlines():
        if line.startswith("SELFTEST "):
            return json.loads(line[len("SELFTEST "):])
    tail = [line for line in output.strip().splitlines() if line.strip()][-3:]
    raise StepFailed("the self-test did not run on the board: %s" % (" | ".join(tail) or "no output"))


def package_json() -> dict:
    """What `mpremote mip install github:OWNER/REPO` reads from package.json at the repo
    root: every module a board runs, by a URL relative to the package.json. No deps: the
    agent speaks MQTT itself (edge/link.py). Kept in step with edge/ by tests/test_provision.py."""
    files = runtime.board_modules()
    import configparser
    meta = configparser.ConfigParser()
    meta.read(os.path.join(runtime.ROOT, "setup.cfg"))
    return {"version": meta["metadata"]["version"], "urls": [[f, f] for f in files], "deps": []}


def format_package_json(pkg: dict) -> str:
    """One file a line, so a diff shows which module came or went."""
    urls = ",\n".join("  " + json.dumps(u) for u in pkg["urls"])
    return '{\n "version": %s,\n "urls": [\n%s\n ],\n "deps": %s\n}\n' % (
        json.dumps(pkg["version"]), urls, json.dumps(pkg["deps"]))

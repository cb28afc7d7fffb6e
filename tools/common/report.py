"""How the installer's commands (provision, flash, scan) say what happened: one line per
step, a progress bar on stderr while a long step runs on a terminal, or one JSON object
per step on stdout with --json, for scripts. Secrets never pass through here.

    rep = Reporter(json_mode=args.json, total=8)
    with rep.step("build", "compile the agent") as st:
        st.progress(3, 41)
        st.done("41 modules", modules=41)
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

BAR = 24


class StepFailed(Exception):
    """A step could not be done; the message says what is wrong and what to do."""

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.data = data


class Step:
    def __init__(self, rep: "Reporter", name: str, title: str) -> None:
        self.rep = rep
        self.name = name
        self.title = title
        self.started = time.monotonic()
        self.detail = ""
        self.data: dict[str, Any] = {}
        self._last_draw = 0.0

    def progress(self, done: int, total: int, note: str = "") -> None:
        """Redraw the bar (a terminal only, at most 20 times a second)."""
        if not self.rep.tty or self.rep.json_mode:
            return
        now = time.monotonic()
        if done < total and now - self._last_draw < 0.05:
            return
        self._last_draw = now
        filled = BAR * done // max(total, 1)
        line = "%s [%s%s] %d/%d %s" % (self.rep.label(self), "#" * filled, "." * (BAR - filled),
                                       done, total, note)
        self.rep.err.write("\r\x1b[K" + line[:self.rep.width])
        self.rep.err.flush()

    def done(self, detail: str, **data: Any) -> None:
        self.detail = detail
        self.data = data

    def __enter__(self) -> "Step":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            self.rep.finished(self, "ok", self.detail, self.data)
        elif isinstance(exc, Exception):
            # a StepFailed, or another error that ends the step (a board that went away)
            self.rep.finished(self, "failed", str(exc), getattr(exc, "data", {}))
        return False


class Reporter:
    def __init__(self, json_mode: bool = False, total: int = 0, out: TextIO = sys.stdout,
                 err: TextIO = sys.stderr) -> None:
        self.json_mode = json_mode
        self.total = total
        self.index = 0
        self.out = out
        self.err = err
        self.tty = err.isatty()
        self.width = 100
        self.steps: list[dict[str, Any]] = []

    def label(self, step: Step) -> str:
        return "[%d/%d] %-10s" % (self.index, self.total, step.name) if self.total else "%-10s" % step.name

    def step(self, name: str, title: str) -> Step:
        self.index += 1
        st = Step(self, name, title)
        if self.tty and not self.json_mode:
            self.err.write("%s %s..." % (self.label(st), title))
            self.err.flush()
        return st

    def finished(self, step: Step, status: str, detail: str, data: dict[str, Any]) -> None:
        seconds = round(time.monotonic() - step.started, 2)
        record = {"step": step.name, "status": status, "seconds": seconds, **data}
        record["error" if status == "failed" else "detail"] = detail
        self.steps.append(record)
        if self.json_mode:
            self.out.write(json.dumps(record) + "\n")
            self.out.flush()
            return
        if self.tty:
            self.err.write("\r\x1b[K")
        mark = "FAILED: " if status == "failed" else ""
        stream = self.err if status == "failed" else self.out
        stream.write("%s %s%s (%.1f s)\n" % (self.label(step), mark, detail, seconds))
        stream.flush()

    def note(self, text: str) -> None:
        """A line that is not a step (a hint, a warning): stderr, or skipped under --json."""
        if not self.json_mode:
            self.err.write(text + "\n")
            self.err.flush()

    def summary(self, ok: bool, text: str, **data: Any) -> None:
        if self.json_mode:
            self.out.write(json.dumps({"result": "ok" if ok else "failed", "summary": text,
                                       **data}) + "\n")
        else:
            (self.out if ok else self.err).write(text + "\n")
        (self.out if ok or self.json_mode else self.err).flush()

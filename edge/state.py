# Small persistent state on flash (learned habits, boot counter): one file per name,
# replaced atomically so a power cut leaves the old or the new copy, never half of one.
import os


def sync(f):
    """Make a write durable before going on: CPython buffers in the process and the OS;
    MicroPython's flush() commits the file (fsync on the unix port, a littlefs sync)."""
    f.flush()
    try:
        os.fsync(f.fileno())
    except (AttributeError, OSError):
        pass


class FileStore:
    def __init__(self, root):
        self.root = root
        try:
            os.mkdir(root)
        except OSError:
            pass  # exists

    def _path(self, name):
        return self.root + "/" + name

    def load(self, name):
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def save(self, name, data):
        tmp = self._path(name) + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            sync(f)
        os.rename(tmp, self._path(name))


class MemoryStore:
    """For replays and tests: the same interface, nothing on disk."""

    def __init__(self):
        self.data = {}

    def load(self, name):
        return self.data.get(name)

    def save(self, name, data):
        self.data[name] = bytes(data)

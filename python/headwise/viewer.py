"""`show`: opens a session in the headwise window. The window watches the file it opened and
reloads it when it is replaced, so a notebook that captures into the same path again drives
the window it started; `show` starts a window only when none it started for that path is
still open."""
import os
import shutil
import subprocess

_windows = {}


class ViewerNotFound(RuntimeError):
    pass


def find_viewer():
    """The headwise binary: `HEADWISE_BIN`, else `headwise` on PATH."""
    named = os.environ.get("HEADWISE_BIN")
    if named:
        if os.path.isfile(named) and os.access(named, os.X_OK):
            return named
        raise ViewerNotFound(f"HEADWISE_BIN is {named!r}, which is not an executable file")
    found = shutil.which("headwise")
    if found:
        return found
    raise ViewerNotFound(
        "no headwise viewer found: install it (cargo install --path app, from the headwise "
        "repository) so that `headwise` is on PATH, or set HEADWISE_BIN to the binary")


def show(path, *, extra_args=()):
    """Opens `path` in a headwise window (or leaves the one this process opened for it, which
    reloads the file by itself). Returns the window's process."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no session file at {path}")
    running = _windows.get(path)
    if running is not None and running.poll() is None:
        return running
    binary = find_viewer()
    process = subprocess.Popen([binary, path, *extra_args], stdin=subprocess.DEVNULL,
                               start_new_session=True)
    _windows[path] = process
    return process

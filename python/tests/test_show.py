"""`headwise.show`: starts the viewer named by HEADWISE_BIN (or found on PATH) on the session,
does not start a second one while the first is open (that window reloads the file itself),
and says clearly when there is no viewer."""
import os
import stat
import sys
import time

import pytest

import headwise
from headwise import viewer


def fake_viewer(tmp_path, log):
    script = tmp_path / "headwise"
    script.write_text(f"#!{sys.executable}\nimport sys, time\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\ntime.sleep(30)\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_show_starts_the_viewer_once_per_session(tmp_path, monkeypatch):
    log = tmp_path / "log.txt"
    monkeypatch.setenv("HEADWISE_BIN", str(fake_viewer(tmp_path, log)))
    session = tmp_path / "s.safetensors"
    session.write_bytes(b"")
    first = headwise.show(session)
    second = headwise.show(session)
    try:
        assert first is second, "the open window reloads the file; no second window"
        for _ in range(100):
            if log.exists() and log.read_text():
                break
            time.sleep(0.05)
        assert log.read_text().split() == [str(session.resolve())]
    finally:
        first.kill()
        first.wait()
        viewer._windows.clear()


def test_without_a_viewer_show_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.delenv("HEADWISE_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    session = tmp_path / "s.safetensors"
    session.write_bytes(b"")
    with pytest.raises(headwise.ViewerNotFound, match="HEADWISE_BIN"):
        headwise.show(session)
    monkeypatch.setenv("HEADWISE_BIN", str(tmp_path / "missing"))
    with pytest.raises(headwise.ViewerNotFound, match="not an executable"):
        headwise.show(session)

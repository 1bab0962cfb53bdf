"""The run folder lock: one holder at a time, named when it refuses; a dead holder's folder is taken over."""

from __future__ import annotations

import json
import os
import socket

import pytest

from harness.runlock import HOLDER_FILE, Holder, RunFolderBusy, RunLock, holder
from wan_runtime.errors import ConfigError


def test_a_second_lock_on_a_held_folder_is_refused_naming_the_holder(tmp_path):
    with RunLock(tmp_path, command="wanbench run smoke --out here"):
        with pytest.raises(RunFolderBusy) as info:
            RunLock(tmp_path).acquire()
    message = str(info.value)
    assert f"run folder {tmp_path} is in use by another run (pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "wanbench run smoke --out here); wait for it to end, or use another --out" in message
    assert isinstance(info.value, ConfigError) and info.value.holder.pid == os.getpid()


def test_holder_names_who_holds_a_folder_and_none_once_released(tmp_path):
    assert holder(tmp_path) is None
    with RunLock(tmp_path, command="first"):
        held = holder(tmp_path)
        assert (held.pid, held.host, held.command) == (os.getpid(), socket.gethostname(), "first")
    assert holder(tmp_path) is None
    assert not (tmp_path / HOLDER_FILE).exists()


def test_a_folder_left_locked_by_a_dead_run_is_taken_over_with_a_note(tmp_path):
    dead = Holder(pid=2**22 + 17, host=socket.gethostname(), started="2026-01-01T00:00:00+00:00", command="old run")
    (tmp_path / HOLDER_FILE).write_text(json.dumps(dead.__dict__))  # its record outlived it; its flock did not
    with RunLock(tmp_path) as lock:
        assert lock.took_over == (f"took over run folder {tmp_path}, left locked by a run that ended without "
                                  f"releasing it (pid {dead.pid} on host {dead.host}, started {dead.started}: old run)")
        assert holder(tmp_path).pid == os.getpid()


def test_a_clean_release_leaves_nothing_to_take_over(tmp_path):
    RunLock(tmp_path).acquire().release()
    with RunLock(tmp_path) as lock:
        assert lock.took_over is None


def test_a_damaged_holder_record_does_not_stop_the_lock(tmp_path):
    (tmp_path / HOLDER_FILE).write_text("{torn")
    with RunLock(tmp_path) as lock:
        assert lock.took_over is None and holder(tmp_path).pid == os.getpid()

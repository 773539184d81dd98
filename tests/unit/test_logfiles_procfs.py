from __future__ import annotations

import os

from plum.agent import logfiles, procfs


def test_rotation_keeps_backups_and_truncates(tmp_path):
    log = tmp_path / "app.log"
    fd = logfiles.open_for_append(log)
    for round_ in range(3):
        os.write(fd, f"round {round_}\n".encode() * 100)
        assert logfiles.rotate_if_large(log, 100, 2)
    os.write(fd, b"after\n")  # the app's descriptor keeps working after rotation
    os.close(fd)
    assert log.read_text() == "after\n"
    assert (tmp_path / "app.log.1").read_text().startswith("round 2")
    assert (tmp_path / "app.log.2").read_text().startswith("round 1")
    assert not (tmp_path / "app.log.3").exists()
    assert not logfiles.rotate_if_large(log, 100, 2)


def test_tail(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(10000)))
    assert logfiles.tail(log, 3) == ["line 9997", "line 9998", "line 9999"]
    assert logfiles.tail(log, 0) == []
    assert logfiles.tail(tmp_path / "missing", 5) == []


def test_process_identity_includes_start_time():
    me = procfs.read_stat(os.getpid())
    assert me is not None
    assert procfs.is_same_process(os.getpid(), me.start_ticks, procfs.boot_id())
    assert not procfs.is_same_process(os.getpid(), me.start_ticks + 1, procfs.boot_id())
    assert not procfs.is_same_process(os.getpid(), me.start_ticks, "another-boot")

from __future__ import annotations

import asyncio
import os
import stat

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


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_rotated_logs_have_the_live_log_mode(tmp_path):
    os.umask(old := os.umask(0))  # the most permissive umask: modes must not depend on it
    try:
        log = tmp_path / "logs" / "app.log"
        fd = logfiles.open_for_append(log)
        os.write(fd, b"x" * 200)
        assert logfiles.rotate_if_large(log, 100, 2)
        os.write(fd, b"y" * 200)
        assert logfiles.rotate_if_large(log, 100, 2)
        os.close(fd)
    finally:
        os.umask(old)
    assert mode(tmp_path / "logs") == 0o750
    assert {p.name: mode(p) for p in log.parent.iterdir()} == {
        "app.log": 0o640,
        "app.log.1": 0o640,
        "app.log.2": 0o640,
    }
    assert (tmp_path / "logs" / "app.log.1").read_bytes() == b"y" * 200


def test_restrict_modes_corrects_older_rotated_logs(tmp_path):
    for name in ("app.log", "app.log.1", "app.log.2"):
        (tmp_path / name).write_text("x")
        os.chmod(tmp_path / name, 0o644)
    logfiles.restrict_modes(tmp_path)
    assert {mode(p) for p in tmp_path.iterdir()} == {0o640}
    logfiles.restrict_modes(tmp_path / "missing")  # an app that never logged


def test_replace_with_lines_is_private(tmp_path):
    log = tmp_path / "logs" / "app.log"
    logfiles.replace_with_lines(log, ["last", "words"])
    assert log.read_text() == "last\nwords\n" and mode(log) == 0o640


def test_tail_of_megabytes_without_a_newline_reads_a_bounded_window(tmp_path, monkeypatch):
    log = tmp_path / "app.log"
    with log.open("wb") as fh:
        fh.write(b"old line\n" + b"x" * (20 * 1024 * 1024) + b"THE END")
    read = []
    real_open = type(log).open

    def counting_open(self, *args, **kwargs):
        fh = real_open(self, *args, **kwargs)
        real_read = fh.read
        fh.read = lambda size=-1: read.append(len(chunk := real_read(size))) or chunk
        return fh

    monkeypatch.setattr(type(log), "open", counting_open)
    lines = logfiles.tail(log, 20)
    assert sum(read) <= 20 * logfiles.TAIL_BYTES_PER_LINE + 1
    assert len(lines) == 1
    assert lines[0].startswith(logfiles.TRUNCATED) and lines[0].endswith("xTHE END")
    assert len(lines[0]) == len(logfiles.TRUNCATED) + logfiles.MAX_LINE_CHARS


def test_tail_cuts_long_lines(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("short\n" + "y" * 10_000 + "\nlast\n")
    assert logfiles.tail(log, 3) == [
        "short",
        "y" * logfiles.MAX_LINE_CHARS + logfiles.TRUNCATED,
        "last",
    ]
    assert logfiles.tail(log, 3, max_line=4) == [
        "shor" + logfiles.TRUNCATED,
        "yyyy" + logfiles.TRUNCATED,
        "last",
    ]


def test_tail_keeps_whole_lines_when_the_window_starts_on_one(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert logfiles.tail(log, 2) == ["line 99998", "line 99999"]
    assert logfiles.tail(log, 10_000)[0] == "line 90000"  # short lines: every one asked for


def test_tail_async(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("a\nb\n")
    assert asyncio.run(logfiles.tail_async(log, 1)) == ["b"]


def test_process_identity_includes_start_time():
    me = procfs.identify(os.getpid())
    assert me is not None
    assert procfs.is_same_process(os.getpid(), me.start_ticks, procfs.boot_id())
    assert not procfs.is_same_process(os.getpid(), me.start_ticks + 1, procfs.boot_id())
    assert not procfs.is_same_process(os.getpid(), me.start_ticks, "another-boot")

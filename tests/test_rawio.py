"""rawio: the hot path's file and environment calls, against what os and open() do."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from imagemapper import rawio


@given(st.binary(max_size=5000))
def test_write_then_read_round_trips(tmp_path_factory, data):
    path = str(tmp_path_factory.mktemp("rw") / "f")
    rawio.write_bytes(path, data)
    assert rawio.read_bytes(path) == data
    with open(path, "rb") as handle:
        assert handle.read() == data


def test_large_file_is_read_whole(tmp_path):
    data = os.urandom(3 << 20)  # larger than one read
    path = str(tmp_path / "big")
    rawio.write_bytes(path, data)
    assert rawio.read_bytes(path) == data


def test_write_replaces_and_append_appends(tmp_path):
    path = str(tmp_path / "f")
    rawio.write_bytes(path, b"first line that is long\n")
    rawio.write_bytes(path, b"short\n")
    assert rawio.read_bytes(path) == b"short\n"  # truncated, not overwritten in place
    rawio.write_bytes(path, b"more\n", append=True)
    assert rawio.read_bytes(path) == b"short\nmore\n"
    assert os.stat(path).st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_read_limit_is_enforced(tmp_path):
    path = str(tmp_path / "f")
    rawio.write_bytes(path, b"x" * 100)
    assert rawio.read_bytes(path, 100) == b"x" * 100
    with pytest.raises(OSError, match="larger than 99 bytes"):
        rawio.read_bytes(path, 99)


def test_only_regular_files_are_read(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    for path in (fifo, str(tmp_path), "/dev/zero"):
        with pytest.raises(OSError, match="not a regular file"):
            rawio.read_bytes(path)  # and never hangs on the FIFO or reads /dev/zero forever
    link = tmp_path / "link"
    link.symlink_to("/dev/zero")
    with pytest.raises(OSError, match="not a regular file"):
        rawio.read_bytes(str(link))


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        rawio.read_bytes(str(tmp_path / "missing"))
    assert not rawio.exists(str(tmp_path / "missing"))
    assert rawio.exists(str(tmp_path))


def test_open_regular_gives_the_size(tmp_path):
    path = str(tmp_path / "f")
    rawio.write_bytes(path, b"12345")
    fd, size = rawio.open_regular(path)
    try:
        assert size == 5
        assert rawio.pread_exact(fd, 3, 1) == b"234"
        with pytest.raises(OSError, match="short read"):
            rawio.pread_exact(fd, 10, 0)
    finally:
        os.close(fd)


def test_environ_matches_os_environ(monkeypatch):
    monkeypatch.setattr(rawio, "_environ", None)
    assert rawio.environ() == dict(os.environ)
    assert rawio.environ() is rawio.environ()  # decoded once per process


def test_environ_keeps_undecodable_bytes(monkeypatch):
    monkeypatch.setattr(rawio, "_environ", None)
    monkeypatch.setitem(os.environb, b"IMAGE_MAPPER_TEST_RAW", b"caf\xe9")
    try:
        value = rawio.environ()["IMAGE_MAPPER_TEST_RAW"]
        assert value.encode("utf-8", "surrogateescape") == b"caf\xe9"
        assert value == os.environ["IMAGE_MAPPER_TEST_RAW"]  # os decodes the same way
    finally:
        monkeypatch.setattr(rawio, "_environ", None)

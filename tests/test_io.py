import pytest

from untwine.io import atomic_write, atomic_write_bytes, atomic_write_csv, atomic_write_text


def test_atomic_write_never_leaves_a_half_written_file(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"good")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"partial")
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "good")

    def half_then_fail(f):
        f.write(b"half")
        raise ValueError("serialiser failed")

    with pytest.raises(ValueError, match="serialiser failed"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_written_files_are_readable_by_others(tmp_path):
    path = atomic_write_bytes(tmp_path / "sub" / "f.bin", b"x")
    assert path.read_bytes() == b"x" and path.stat().st_mode & 0o044 == 0o044


def test_atomic_write_csv_takes_the_union_of_columns_in_first_seen_order(tmp_path):
    path = atomic_write_csv(tmp_path / "rows.csv", [{"a": 1, "b": 2}, {"b": 3, "c": 4}])
    assert path.read_text().splitlines() == ["a,b,c", "1,2,", ",3,4"]
    assert atomic_write_csv(tmp_path / "none.csv", []).read_text() == ""

"""The .data reader: sections, both raw spellings, hexdump mem, results, includes, errors."""
import pytest

from pybpf.datafile import DataFileError, parse_data_text


def test_sections_and_values(tmp_path):
    df = parse_data_text("# c\n-- asm\nmov %r0, 1 # one\nexit\n-- mem\n00: 01 02\n0a\n-- result\n0x10\n")
    assert df.asm.splitlines()[2] == "mov %r0, 1 # one"   # line numbers match the file
    assert df.mem == b"\x01\x02\x0a"
    assert df.result == 16


def test_raw_both_spellings():
    a = parse_data_text("-- raw\n0x00000001000000b7\n0x0000000000000095\n").raw
    b = parse_data_text("-- raw\nb7 00 00 00 01 00 00 00\n95 00 00 00 00 00 00 00\n").raw
    assert a == b == bytes.fromhex("b70000000100000095000000" + "00000000")


def test_error_sections_and_unknown():
    df = parse_data_text("-- asm\nexit\n-- error pattern\nout of .* bounds\n-- frob\nx\n")
    assert df.error_pattern == "out of .* bounds" and df.error is None
    assert df.unknown == ["frob"]
    assert parse_data_text("-- raw\n95 00 00 00 00 00 00 00\n-- error\n").error == ""


def test_include(tmp_path):
    (tmp_path / "prog.s").write_text("mov %r0, 7\nexit\n")
    df = parse_data_text("-- asm @ prog.s\n-- result\n7\n", str(tmp_path / "t.data"), tmp_path)
    assert "mov %r0, 7" in df.asm and df.result == 7


@pytest.mark.parametrize("text", ["-- mem\nzz\n", "-- result\nabc\n", "-- raw\n0xzz\n", "-- asm\n-- asm\n"])
def test_bad_files_raise_typed_errors(text):
    with pytest.raises(DataFileError) as e:
        df = parse_data_text(text, "t.data")
        df.mem, df.result, df.raw
    assert "t.data" in str(e.value)

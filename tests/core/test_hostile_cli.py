"""The command line under careless arguments: each user error is one ``error:`` line and exit
status 2, never a traceback or an attempt to allocate what was asked."""

import pytest

from bokehdepth_core import cli


@pytest.mark.parametrize("args, word", [
    (["demo", "--size", "0"], "size"),
    (["demo", "--size", "100000000"], "size"),
    (["synth", "-n", "-1"], "n (number of scenes)"),
    (["synth", "-n", "1", "--size", "0"], "size"),
    (["synth", "-n", "1", "--size", "16", "--num-k", "100000"], "n_k"),
    (["calib", "--f-number", "nan", "--focal-mm", "50", "--focal-35mm", "50", "--focus-m", "2", "--width", "9",
      "--height", "9"], "f_number"),
    (["calib", "--f-number", "2", "--focal-mm", "50", "--focal-35mm", "50", "--focus-m", "2", "--width", "0",
      "--height", "9"], "width"),
    (["bench", "render", "--size", "16", "--device", "nonsense"], "--device"),
    (["bench", "render", "--size", "-3"], "size"),
])
def test_user_errors_exit_2_with_one_line(args, word, tmp_path, capsys):
    if args[0] in ("demo", "synth"):
        args = [args[0], "--out", str(tmp_path / "out"), *args[1:]]
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1 and word in captured.err, captured.err
    assert "Traceback" not in captured.err + captured.out


def test_damaged_photo_for_calib(tmp_path, capsys):
    (tmp_path / "half.jpg").write_bytes(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*" + b"\x00" * 20)
    assert cli.main(["calib", "--image", str(tmp_path / "half.jpg"), "--f-number", "2", "--focal-mm", "50",
                     "--focal-35mm", "50", "--focus-m", "2"]) == 2
    err = capsys.readouterr().err
    assert "half.jpg" in err and err.count("\n") == 1

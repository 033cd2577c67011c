"""The CLI: help, calibration, and the README's main-job command."""

import json
import subprocess
import sys

from support import ROOT


def run(*args):
    return subprocess.run([sys.executable, "-m", "bokehdepth_core", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("demo", "calib", "bench"):
        assert cmd in r.stdout


def test_calib_json():
    r = run("calib", "--f-number", "2", "--focal-mm", "50", "--focal-35mm", "50", "--focus-m", "2",
            "--width", "1024", "--height", "1024", "--json")
    assert r.returncode == 0, r.stderr
    assert abs(json.loads(r.stdout)["k"] - 21.4538) < 1e-3


def test_calib_bad_input_is_a_clear_error():
    r = run("calib", "--f-number", "0", "--focal-mm", "50", "--focal-35mm", "50", "--focus-m", "2",
            "--width", "1024", "--height", "1024")
    assert r.returncode == 2
    assert "f_number" in r.stderr and "Traceback" not in r.stderr
    r = run("calib", "--f-number", "2")
    assert r.returncode == 2 and "--focal-mm" in r.stderr


def test_import_is_cheap():
    code = ("import sys, time; t=time.time(); sys.path.insert(0, '.'); import bokehdepth_core.optics; "
            "bad=[m for m in ('diffusers','transformers','peft') if m in sys.modules]; print(bad)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_extension_import_leaves_diffusers_unloaded():
    """ComfyUI start-up imports every node family: the heavy libraries load only when a node runs."""
    code = ("import sys; sys.path.insert(0, 'tests'); from support import load_extension; load_extension(); "
            "print([m for m in ('diffusers', 'transformers', 'peft') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_user_errors_are_one_line_without_traceback(tmp_path, capsys):
    from bokehdepth_core import cli

    assert cli.main(["calib", "--image", str(tmp_path / "missing.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: image file not found") and err.count("\n") == 1
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    assert cli.main(["calib", "--image", str(tmp_path / "junk.jpg")]) == 2
    assert "junk.jpg" in capsys.readouterr().err
    assert cli.main(["synth", "--out", str(tmp_path / "s"), "-n", "1", "--foregrounds", str(tmp_path / "nope")]) == 2
    assert "folder not found" in capsys.readouterr().err

"""The tests collect and pass in a checkout named as the README's manual install names it
(``ComfyUI-BokehDepth``: not a valid module name, and the root ``__init__.py`` imports relatively)."""

import os
import shutil
import subprocess
import sys

from support import ROOT


def test_tests_pass_in_a_checkout_named_comfyui_bokehdepth(tmp_path):
    dst = tmp_path / "ComfyUI-BokehDepth"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(".git", "__pycache__", "workflows", "*.pt", "*.pth"))
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "PYTHONPATH")}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/core/test_color.py"],
                         cwd=dst, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]

"""The wheel holds every subpackage of the source tree under ``flowrun.*`` and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from flowrun_testing import REPO

CODE_DIRS = {
    "core": "flowrun/core",
    "network": "flowrun/network",
    "state": "flowrun/state",
    "cli": "flowrun/cli",
}


def test_wheel_contains_every_subpackage(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), REPO],
        check=True,
        capture_output=True,
    )
    (wheel,) = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
    names = set(zipfile.ZipFile(tmp_path / wheel).namelist())
    expected = set()
    for top, target in CODE_DIRS.items():
        for root, _dirs, files in os.walk(os.path.join(REPO, top)):
            if "__pycache__" in root:
                continue
            rel = os.path.relpath(root, os.path.join(REPO, top))
            for f in files:
                if f.endswith(".py"):
                    path = os.path.normpath(os.path.join(target, rel, f))
                    expected.add(path)
    missing = sorted(expected - names)
    assert not missing, f"missing from the wheel: {missing}"
    tops = {n.split("/")[0] for n in names if not n.endswith(".dist-info") and "/" in n}
    assert tops <= {"flowrun", wheel.split("-")[0] + "-" + wheel.split("-")[1] + ".dist-info"}, tops
    entry = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(tmp_path / wheel).read(entry[0]).decode()
    assert "flowrun = flowrun.cli.main:main" in text

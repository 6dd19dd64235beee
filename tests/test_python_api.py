"""The Python API: the README's example runs as written, and the lazy exports resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

import analysis

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    """The code block after the ``<!-- python-api -->`` marker of README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- python-api -->\s*```python\n(.*?)```", text, flags=re.S)
    assert match, "README.md has no <!-- python-api --> example"
    return match.group(1)


def test_every_exported_name_resolves():
    assert sorted(analysis.__all__) == sorted(analysis._EXPORTS)
    for name in analysis.__all__:
        assert getattr(analysis, name) is not None, name
    assert set(analysis.__all__) <= set(dir(analysis))


def test_importing_the_package_does_not_import_pymc():
    code = "import sys, analysis; analysis.load_dataset; print('pymc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    matplotlib.use("Agg")
    os.symlink(ROOT / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md <!-- python-api -->", "exec"), {})
    printed = capsys.readouterr().out
    assert "eti95_lower" in printed and "mu" in printed  # the summary table
    assert "frequentist REML" in printed  # the comparison table
    assert (tmp_path / "forest_BMD.png").stat().st_size > 10_000
    import matplotlib.pyplot as plt

    plt.close("all")

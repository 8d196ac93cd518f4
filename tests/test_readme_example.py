"""The README's Python example runs as written (copied out of README.md, executed in a fresh directory)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    block = re.search(r"<!-- readme-example:start -->\s*```python\n(.*?)```\s*<!-- readme-example:end -->", text,
                      re.S)
    assert block, "README.md lost its marked Python example"
    return block.group(1)


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(readme_example(), str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    result = namespace["result"]
    assert result.decision in ("switch", "keep", "inconclusive")
    assert len(result.ranking) >= 2 and "DiceCE" in set(result.ranking["loss"])
    assert result.report == (tmp_path / "example_run" / "report.html").resolve() and result.report.exists()
    assert namespace["trainer_file"].name == "nnUNetTrainer_autoloss_DiceFocal.py"
    out = capsys.readouterr().out
    assert "DiceCE" in out and result.decision in out

"""Output a user can read: at 80 columns, in pipes (`| cat`, `| less`), and as JSON from every command."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from autoloss.cli.main import build_parser

BOX = set("┏┓┃━│┡┩└┘─")


def run(*args: str) -> subprocess.CompletedProcess:
    # stdout is a pipe here, exactly as in `autoloss ... | cat`
    return subprocess.run([sys.executable, "-m", "autoloss", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from autoloss.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("raw"), dim=2, num_cases=4, shape=(48, 48),
                                  num_classes=2, foreground_ratio=(0.2, 0.003), objects_per_case=(1, 3),
                                  absent_fraction=(0.0, 0.25), seed=3, dataset_id=993, name="OutputCheck")


def test_losses_piped_is_plain_text_within_80_columns():
    out = run("losses")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    assert not BOX & set(out.stdout)
    assert len(out.stdout) < 20_000  # was 174 KB of wrapped 3-character fragments
    from autoloss.losses import list_losses

    for d in list_losses():
        assert any(line.startswith(f"{d.name} = ") for line in lines), d.name
        for p in d.params:  # every parameter on its own line with its default and range, unbroken
            assert any(line.startswith(f"  {p.name} ") and p.range_text() in line for line in lines), p.name


def test_recommend_piped_keeps_each_reason_on_one_line(dataset):
    recs = json.loads(run("recommend", str(dataset), "--json", "-j", "1").stdout)
    out = run("recommend", str(dataset), "-j", "1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for rec in recs:
        for reason in rec["reason"].split("; "):
            assert any(reason in line for line in lines), f"reason split into fragments: {reason!r}"
    assert "[LO]" not in out.stdout and "[ANN]" not in out.stdout  # evidence only with --explain
    explained = run("recommend", str(dataset), "-j", "1", "--explain").stdout
    evidence = [e for rec in recs for e in rec["evidence"]]
    assert evidence, "the synthetic dataset should fire at least one rule"
    for e in set(evidence):
        assert sum(line.startswith(f"- {e}") for line in explained.splitlines()) == 1  # once, not per loss


def test_fingerprint_piped_shows_whole_headers_and_values(dataset):
    out = run("fingerprint", str(dataset), "-j", "1")
    assert out.returncode == 0, out.stderr
    head = next(line for line in out.stdout.splitlines() if "regime" in line)
    for col in ("class", "regime", "fraction", "objects", "size", "thick", "absent"):
        assert col in head
    assert "…" not in out.stdout


def test_tables_at_an_80_column_terminal_become_readable_records(dataset):
    from rich.console import Console

    from autoloss.api import fingerprint, recommend
    from autoloss.fingerprinting import fingerprint_table
    from autoloss.reporting.terminal import print_table, recommendation_table

    fp = fingerprint(dataset, num_workers=1)
    for table in (fingerprint_table(fp), recommendation_table(recommend(fp), fp)):
        buf = io.StringIO()
        print_table(table, Console(file=buf, width=80, force_terminal=True, color_system=None))
        text = buf.getvalue()
        assert max(map(len, text.splitlines())) <= 80
        assert "…" not in text
    assert "boundary/volume: " in text or "why: " in text


def test_every_command_has_json():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert "--json" in p._option_string_actions, f"autoloss {name} has no --json"


def test_report_and_export_json(tmp_path):
    out = run("export", "DiceFocal", "--param", "focal.gamma=3", "-o", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["class"] == "nnUNetTrainer_autoloss_DiceFocal" and data["usage"]
    assert "'focal.gamma': 3" in (tmp_path / "nnUNetTrainer_autoloss_DiceFocal.py").read_text()

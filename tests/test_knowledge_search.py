"""A real (tiny) search with confirmation writes a knowledge record; the next search is warm-started from it."""
from __future__ import annotations

import json

import pytest

from autoloss.cli import main
from autoloss.knowledge.store import KnowledgeStore
from autoloss.nnunet.run import Fidelity
from autoloss.searching.confirm import ConfirmSettings
from autoloss.searching.runner import SearchConfig, run_search
from conftest import HIPPO, MAX_CASES, TINY

pytestmark = pytest.mark.slow


def test_a_confirmed_search_writes_a_record_that_knowledge_list_shows(search_work_dir, capsys):
    cfg = SearchConfig(dataset=str(HIPPO), budget=2, fidelity=Fidelity(**TINY), work_dir=search_work_dir,
                       device="cpu", max_cases=MAX_CASES, pruner="none", seed=0, prior_top=2,
                       confirm=ConfirmSettings(top=1, num_folds=2))
    logs: list[str] = []
    run_search(cfg, log=logs.append)
    assert any(line.startswith("knowledge record ") for line in logs), logs
    capsys.readouterr()
    assert main(["knowledge", "list", "--json", "--no-seeds"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1
    row = rows[0]
    assert row["kind"] == "search" and row["dataset"] == "Dataset103_Hippocampus" and row["losses"] == 1
    assert row["decision"] == "inconclusive"  # 2 paired cases: too few to tell
    record = KnowledgeStore().get(row["id"])
    verdict = json.loads((search_work_dir / "verdict.json").read_text())
    result, cmp = record["results"][0], verdict["comparisons"][0]
    assert result["spec"] == cmp["spec"] and result["gain"] == pytest.approx(cmp["gain"])
    assert result["cases"] == 2 and set(result["dice_gain"]) == set(cmp["per_class"])
    assert record["settings"]["confirm_folds"] == [1, 2] and record["settings"]["fidelity"]["epochs"] == 2
    text = json.dumps(record)
    assert "hippocampus_" not in text and str(HIPPO) not in text  # statistics only: no case names, no paths

    # the same search resumed writes the same record: skipped, not duplicated
    run_search(cfg, log=lambda s: None)
    assert len(KnowledgeStore().user_records()) == 1

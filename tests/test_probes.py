"""Bad input and faults, as a user meets them (issue 20): every probe of ``tests/probes.py`` is refused with exit 2
and ONE line naming the file or case, no traceback, and every file that existed before is unchanged; options are
checked before any work; read-only folders (as a non-root user) are one line; printed commands paste into a shell;
a resumed search trains what an uninterrupted one would; kill -9 of a search leaves no process behind."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

import autoloss
from autoloss.cli import main
from autoloss.errors import AutolossError
from autoloss.losses import baseline_spec
from autoloss.nnunet.run import Fidelity
from autoloss.schema import SCHEMA_VERSION
from autoloss.searching import records as rec
from autoloss.searching import study as studies
from autoloss.searching.confirm import ConfirmSettings, planned_cost
from autoloss.searching.space import SearchSpace
from autoloss.spec import LossSpec
from conftest import HIPPO, MAX_CASES, SHARED_DATASETS, need_shared
from probes import DATASET_PROBES, WORK_DIR_PROBES, base, finished_work_dir, snapshot


def assert_refused(argv: list, culprit: str, capsys) -> str:
    """``autoloss ARGV`` exits 2 with exactly one stderr line, an error naming ``culprit``, and no traceback."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (argv, err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("autoloss: error: "), err
    assert culprit in lines[0], (culprit, lines[0])
    return lines[0]


# A search that gets past its checks trains at a smoke fidelity, so a regression fails in seconds, not hours.
SMOKE = ["--config", "2d", "--device", "cpu", "-j", "1", "--budget", "1", "--no-confirm", "--epochs", "1",
         "--iterations-per-epoch", "2", "--val-iterations", "1", "--no-report", "--no-memory"]


def _argv(command: str, dataset: Path, work: Path) -> list:
    if command == "search":
        return ["search", dataset, "--work-dir", work, *SMOKE]
    return [command, dataset] + (["-j", "1"] if command != "verify" else [])


_BUILT: dict[str, tuple[Path, str]] = {}
DATASET_CASES = [(name, command) for name, probe in DATASET_PROBES.items() for command in probe.commands]


@pytest.mark.parametrize("name,command", DATASET_CASES, ids=[f"{n}-{c}" for n, c in DATASET_CASES])
def test_a_broken_dataset_is_refused_in_one_line(name, command, tmp_path_factory, tmp_path, capsys):
    if name not in _BUILT:  # each probe dataset is made once and shared by its commands (which must not change it)
        _BUILT[name] = DATASET_PROBES[name].make(tmp_path_factory.mktemp("probe"))
    dataset, culprit = _BUILT[name]
    before = snapshot(dataset)
    assert_refused(_argv(command, dataset, tmp_path / "work"), culprit, capsys)
    assert snapshot(dataset) == before
    if command == "search":  # refused before nnU-Net was asked to plan anything
        assert not list((tmp_path / "work").rglob("nnUNetPlans.json"))


def test_verify_passes_a_healthy_dataset_and_names_warnings(tmp_path, capsys):
    root = base(tmp_path)
    dj = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps(dj | {"labels": dj["labels"] | {"extra": 2}, "numTraining": 7}))
    assert main(["verify", str(root)]) == 0
    captured = capsys.readouterr()
    assert "5 case(s), 10 files decoded whole" in captured.out
    warnings = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(warnings) == 2 and all(w.startswith("autoloss: warning: ") for w in warnings)
    assert "numTraining is 7" in warnings[0] and "'extra' (label 2) appears in no label file" in warnings[1]
    report = autoloss.verify(root)
    assert report.ok and report.cases == 5 and len(report.warnings) == 2


@pytest.mark.parametrize("name", ["Dataset101_ISBIMembrane", "Dataset102_MontgomeryLungs", "Dataset103_Hippocampus",
                                  "Dataset104_AxonMyelin", "Dataset105_SpinalCordTiny"])
def test_verify_passes_every_shared_dataset(name):
    need_shared()
    report = autoloss.verify(SHARED_DATASETS / name, max_cases=6, num_workers=1)
    assert report.ok and not report.warnings, report.errors + report.warnings


def test_fingerprint_prints_a_full_percentage():
    from autoloss.fingerprinting import _pct

    assert [_pct(x) for x in (1.0, 0.26, 0.027, 0.0)] == ["100 %", "26 %", "2.7 %", "0 %"]


# ---------------------------------------------------------------- damaged work directories

@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("finished")
    dataset = base(folder / "data")
    return dataset, finished_work_dir(folder / "work", dataset)


@pytest.mark.parametrize("damage", list(WORK_DIR_PROBES))
def test_a_damaged_study_rewrites_nothing(damage, finished, tmp_path, capsys):
    dataset, good = finished
    work = tmp_path / "work"
    shutil.copytree(good, work)
    WORK_DIR_PROBES[damage](work)
    before = snapshot(work)
    out = tmp_path / "trainers"
    for argv in (["report", work], ["export", work, "-o", out], ["export", work, "-o", out, "--trial", "1"],
                 ["search", dataset, "--work-dir", work, *SMOKE]):
        line = assert_refused(argv, "study.journal: damaged", capsys)
        assert "restore it from a backup" in line
    after = snapshot(work)
    assert {f: after.get(f) for f in before} == before  # report.html, verdict.json, results.csv: untouched
    assert not out.exists()
    with pytest.raises(AutolossError, match="damaged"):
        autoloss.load_search(work)


def test_an_intact_study_still_reports(finished, tmp_path, capsys):
    _, good = finished
    work = tmp_path / "work"
    shutil.copytree(good, work)
    assert main(["report", str(work)]) == 0
    assert autoloss.load_search(work).decision == "inconclusive"


# ---------------------------------------------------------------- options, paths, printed commands

@pytest.mark.parametrize("option,needle", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--iterations-per-epoch", "0"], "--iterations-per-epoch must be at least 1"),
    (["--val-iterations", "0"], "--val-iterations must be at least 1"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--folds", "-1"], "--folds -1"),
    (["--folds", "0", "0"], "listed twice"),
    (["--confirm-folds", "0"], "also screened"),
    (["--confirm-epochs", "0"], "--confirm-epochs must be at least 1"),
    (["--confirm-top", "0"], "--confirm-top must be at least 1"),
    (["--budget", "0"], "--budget must be at least 1"),
    (["-j", "0"], "-j/--num-workers must be at least 1"),
])
def test_search_options_are_checked_before_any_work(option, needle, tmp_path, capsys):
    work = tmp_path / "work"
    assert_refused(["search", "/data/that/is/never/read", "--work-dir", work, *option], needle, capsys)
    assert not work.exists()


def test_confirmation_folds_beyond_the_split_are_refused_before_planning(finished, tmp_path, capsys):
    dataset, _ = finished
    work = tmp_path / "work"
    smoke = [a for a in SMOKE if a != "--no-confirm"]
    assert_refused(["search", dataset, "--work-dir", work, *smoke, "--confirm-folds", "99"],
                   "--confirm-folds 99: the split has folds 0..4", capsys)
    assert not list(work.rglob("nnUNetPlans.json"))


def test_export_takes_a_missing_path_for_a_path(tmp_path, capsys):
    line = assert_refused(["export", "does/not/exist", "-o", tmp_path / "out"], "does/not/exist", capsys)
    assert "no such search work directory or LossSpec file" in line and "unknown loss" not in line


def test_printed_commands_paste_into_a_shell(tmp_path, capsys):
    out = tmp_path / "my trainers (v2)"
    assert main(["export", "DiceFocal", "-o", str(out), "--dataset", "Dataset 103"]) == 0
    lines = [ln.strip() for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")]
    assert shlex.split(lines[0]) == ["export", f"nnUNet_extTrainer={out}"]
    assert shlex.split(lines[1])[1] == "Dataset 103"
    shell = subprocess.run(["bash", "-c", lines[0] + '; printf %s "$nnUNet_extTrainer"'], capture_output=True,
                           text=True)
    assert shell.stdout == str(out)
    docstring_line = next(ln for ln in next(out.glob("*.py")).read_text().splitlines() if "nnUNet_extTrainer=" in ln)
    assert shlex.split(docstring_line.strip()) == ["export", f"nnUNet_extTrainer={out}"]


# ---------------------------------------------------------------- read-only folders, as a non-root user

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]  # root ignores mode bits: drop it
# Runs several `autoloss` command lines in one process (imports paid once): [argv, ...] -> [[exit code, stderr]]
RUN_MANY = """
import contextlib, io, json, sys, traceback
from autoloss.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except BaseException:
            rc = -1
            traceback.print_exc(file=err)
    results.append([rc, err.getvalue()])
print(json.dumps(results))
"""


def _run_as_nobody(argvs: list[list[str]], home: Path) -> list[tuple[int, str]]:
    env = dict(os.environ, AUTOLOSS_HOME=str(home), MPLCONFIGDIR=str(home), HOME=str(home))
    out = subprocess.run([*NOBODY, sys.executable, "-c", RUN_MANY, json.dumps(argvs)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_read_only_folders_are_one_line_for_a_non_root_user(finished):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run autoloss as the unprivileged user nobody (uid 65534)")
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import autoloss"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"the user nobody cannot run this Python ({probe.stderr.strip()[-200:]})")
    dataset, good = finished
    root = Path(tempfile.mkdtemp(prefix="autoloss-ro-"))
    try:
        shutil.copytree(dataset, root / "data")
        shutil.copytree(good, root / "work")
        (root / "home").mkdir()
        os.chown(root / "home", 65534, 65534)
        (root / "ro").mkdir()
        for p in [root, *root.rglob("*")]:  # readable by everyone, writable by root only
            if p != root / "home":
                p.chmod(0o755 if p.is_dir() else 0o644)
        before = snapshot(root / "work")
        probes = [
            (("search", str(root / "data"), "--work-dir", str(root / "work"), "--device", "cpu", "--config", "2d"),
             str(root / "work")),
            (("search", str(root / "data"), "--work-dir", str(root / "ro" / "new"), "--config", "2d"),
             str(root / "ro" / "new")),
            (("report", str(root / "work")), str(root / "work" / "figures")),
            (("export", str(root / "work"), "-o", str(root / "ro"), "--trial", "1"), str(root / "ro")),
            (("export", "DiceFocal", "-o", str(root / "ro" / "sub")), str(root / "ro" / "sub")),
            (("fingerprint", str(root / "data"), "-j", "1", "-o", str(root / "ro" / "fp.json")), str(root / "ro")),
        ]
        results = _run_as_nobody([list(args) for args, _ in probes], home=root / "home")
        for (args, culprit), (rc, err) in zip(probes, results):
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert rc == 2, (args, err[-3000:])
            assert "Traceback" not in err and len(lines) == 1, (args, err[-3000:])
            assert lines[0].startswith("autoloss: error: ") and culprit in lines[0], (args, lines[0])
        assert snapshot(root / "work") == before
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- resume keeps the plan; the plan is what runs

def test_an_interrupted_trial_resumes_first_with_its_seed(tmp_path):
    space = SearchSpace.load(("compound",))
    prior = [baseline_spec(), LossSpec("DiceTopK", {}), LossSpec("DiceHD", {}), LossSpec("DiceFocal", {})]
    settings = {"schema_version": SCHEMA_VERSION, "dataset": "D", "cases": [], "fidelity": Fidelity().to_dict(),
                "objective": "dice", "losses": space.losses, "spaces": []}

    def driver(budget: int):  # what a (new) driver process sees: the study from the journal file
        return studies.open_study(studies.make_storage(None, tmp_path), "s", settings, 0, budget, len(prior), "none")

    study = driver(2)
    studies.enqueue_prior(study, space, prior)
    first = study.ask()
    study.tell(first, 0.5)
    second = study.ask()
    second.set_user_attr(rec.SEED, 1234)
    assert rec.spec_of(study.trials[second.number]) == prior[1]
    # the driver is killed here: trial `second` stays RUNNING in the journal
    resumed = driver(2)
    assert studies.recover_interrupted(resumed) == 1
    again = resumed.ask()
    assert rec.spec_of(resumed.trials[again.number]) == prior[1]  # DiceTopK again, not DiceHD
    assert again.user_attrs[rec.SEED] == 1234
    resumed.tell(again, 0.4)
    assert [rec.spec_of(t) for t in studies.counted(resumed)] == prior[:2]  # what an uninterrupted budget 2 trains
    then = [rec.spec_of(resumed.trials[resumed.ask().number]) for _ in range(2)]
    assert then == prior[2:]  # the rest of the queue, in its order, each once
    assert len([t for t in resumed.trials if t.state == optuna.trial.TrialState.WAITING]) == 0


def test_the_planned_confirmation_is_what_runs():
    # --budget 2 screens Dice+CE and one other loss, so --confirm-top 2 can only confirm one candidate; Dice+CE is
    # trained twice per fold (--control-seeds 2), once when there is no candidate to hold against it
    screening, confirmation, _ = planned_cost(2, Fidelity(), ConfirmSettings(top=2), 2)
    assert (screening, confirmation) == (2, 6)
    assert planned_cost(2, Fidelity(), ConfirmSettings(top=2, control_seeds=1), 2)[1] == 4
    assert planned_cost(5, Fidelity(), ConfirmSettings(top=2), 2)[1] == 8
    assert planned_cost(1, Fidelity(), ConfirmSettings(top=2), 2)[1] == 2  # Dice+CE only


# ---------------------------------------------------------------- kill -9: no process of the search survives

def _proc_stat(pid: int):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _tree(root: int) -> dict[int, int]:
    """Descendants of ``root``: pid -> start time."""
    parent = {int(p): st for p in os.listdir("/proc") if p.isdigit() and (st := _proc_stat(int(p)))}
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        for child, (ppid, start) in parent.items():
            if ppid == pid and child not in out:
                out[child] = start
                todo.append(child)
    return out


def _alive(tree: dict[int, int]) -> list[int]:
    return [pid for pid, start in tree.items() if (st := _proc_stat(pid)) and st[1] == start]


@pytest.mark.slow
def test_kill_9_of_a_search_leaves_no_process_behind(search_work_dir, monkeypatch):
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc")
    cmd = [sys.executable, "-m", "autoloss", "search", str(HIPPO), "--budget", "2", "--max-cases", str(MAX_CASES),
           "--config", "2d", "--epochs", "50", "--iterations-per-epoch", "4", "--val-iterations", "1",
           "--device", "cpu", "--pruner", "none", "--no-confirm", "--work-dir", str(search_work_dir)]
    log = search_work_dir.parent / "search.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, nnUNet_n_proc_DA="2", PYTHONUNBUFFERED="1"))
    try:
        deadline, tree = time.time() + 400, {}
        while time.time() < deadline and proc.poll() is None:
            tree = _tree(proc.pid)
            if len(tree) >= 3:  # the watchdog and nnU-Net's data-loader workers of a running training
                time.sleep(1.0)
                tree = _tree(proc.pid)
                break
            time.sleep(0.3)
        assert proc.poll() is None and len(tree) >= 3, log.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as `kill -9 PID` does
        proc.wait()
        deadline = time.time() + 10
        while _alive(tree) and time.time() < deadline:
            time.sleep(0.2)
        assert _alive(tree) == [], f"still alive 10 s after kill -9 of the driver: {_alive(tree)}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_no_memory_never_opens_the_knowledge_store(tmp_path, capsys):
    store = Path(os.environ["AUTOLOSS_HOME"]) / "knowledge" / "records.jsonl"
    store.parent.mkdir(parents=True)
    store.write_text("{not json\n")
    dataset = base(tmp_path)
    fp = tmp_path / "fp.json"
    assert main(["fingerprint", str(dataset), "-j", "1", "-o", str(fp)]) == 0
    capsys.readouterr()
    assert main(["recommend", "--fingerprint", str(fp), "--no-memory"]) == 0
    assert "records.jsonl" not in "".join(capsys.readouterr())
    assert main(["recommend", "--fingerprint", str(fp)]) == 0  # with memory: the bad line is named, and skipped
    assert f"{store}:1: not a JSON record" in capsys.readouterr().err
    # a search ranks the prior's picks before nnU-Net's planning; a folder not named DatasetXXX_Name stops it there
    plain = shutil.copytree(dataset, tmp_path / "plain_folder")
    for memory, named in ((["--no-memory"], False), ([], True)):
        work = tmp_path / f"work{len(memory)}"
        store.write_text(store.read_text() + "\n")  # another state of the file: named again if read
        assert main(["search", str(plain), "--work-dir", str(work), "--config", "2d", "--device", "cpu", *memory]) == 2
        out = "".join(capsys.readouterr())
        assert "nnU-Net needs the folder named DatasetXXX_Name" in out and ("records.jsonl" in out) == named

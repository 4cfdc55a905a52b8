"""docs/results.md and the README's results table are generated from the studies' data
(``benchmarks/results_doc.py``): the committed text must equal what the script writes, a changed
curve must change it, and the default-run study must be the committed run's."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from tests.helpers import REPO

spec = importlib.util.spec_from_file_location("results_doc", REPO / "benchmarks" / "results_doc.py")
results_doc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results_doc)


def test_committed_docs_equal_what_the_script_generates(capsys):
    status = results_doc.main(["--check"])
    assert status == 0, capsys.readouterr().out


def test_a_changed_curve_changes_the_generated_text(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(REPO / "benchmarks" / "results" / "default_run", results / "default_run")
    before = results_doc.render_doc(results_doc.load_studies(results), results)
    curve = results / "default_run" / "returns.csv"
    lines = curve.read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("return")
    rows = [line.split(",") for line in lines[1:]]
    for row in rows[-10:]:
        row[col] = "-1234.5"  # the last 10 episodes
    curve.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    after = results_doc.render_doc(results_doc.load_studies(results), results)
    assert after != before and "| −1,234.5 |" in after


def test_first_crossing_and_last_ten_from_a_curve(tmp_path):
    curve = tmp_path / "c.csv"
    returns = [-1000, -900, -800, -300, -100, -100, -100, -100, -100, -100, -100, -100]
    curve.write_text(
        "env_step,return\n" + "".join(f"{200 * (i + 1)},{r}\n" for i, r in enumerate(returns))
    )
    got = results_doc.curve_figures(curve, target=-200)
    # rolling 5 at episode 5..: -620, -460, -280, -140 (episode 8, env step 1,600)
    assert got["first_at"] == 1600
    assert got["last10"] == pytest.approx(sum(returns[-10:]) / 10)
    assert results_doc.curve_figures(curve, target=0)["first_at"] is None


def test_a_summary_without_its_machine_or_with_a_missing_file_is_named(tmp_path):
    study = tmp_path / "results" / "s"
    study.mkdir(parents=True)
    summary = {"title": "t", "question": "q", "command": "c", "code_commit": "x", "date": "d"}
    (study / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(results_doc.StudyError, match=r"s/summary.json: missing machine"):
        results_doc.load_studies(tmp_path / "results")
    summary["machine"] = {"cpu": "c", "matmul_dtype": "float32", "device": "cpu"}
    summary["runs"] = [{"label": "a", "seed": 0, "curve": "gone.csv"}]
    (study / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(results_doc.StudyError, match="curve gone.csv is not in"):
        results_doc.load_studies(tmp_path / "results")


def test_the_default_run_study_is_the_committed_run():
    """The study's curve, evaluation episodes and figure are those of dvc.lock's run."""
    study = REPO / "benchmarks" / "results" / "default_run"
    summary = json.loads((study / "summary.json").read_text())
    train = json.loads((REPO / "metrics" / "train.json").read_text())
    run = summary["runs"][0]
    assert (study / "returns.csv").read_bytes() == (REPO / "metrics/train/returns.csv").read_bytes()
    assert (study / "eval_episodes.csv").read_bytes() == (
        REPO / "metrics/eval/episodes.csv"
    ).read_bytes()
    assert (study / "figure.png").read_bytes() == (REPO / "plots/returns.png").read_bytes()
    assert run["train_seconds"] == train["train/wall_seconds"]
    assert summary["gradient_steps"] == train["train/gradient_steps"]


def test_the_default_run_times_each_stage_from_dvc_lines_and_fails_with_the_command():
    spec = importlib.util.spec_from_file_location("default_run", REPO / "benchmarks/default_run.py")
    default_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(default_run)
    script = (
        "echo \"Running stage 'warmup':\"; sleep 0.3; printf 'bar\\r'; "
        "echo \"Running stage 'train':\"; sleep 0.6; echo done"
    )
    seconds, stages = default_run.run_timed(["bash", "-c", script])
    assert list(stages) == ["warmup", "train"]
    assert stages["warmup"] >= 0.3 and stages["train"] >= 0.6  # the sleeps: lower bounds only
    assert stages["warmup"] + stages["train"] <= seconds + 0.1
    with pytest.raises(default_run.subprocess.CalledProcessError):
        default_run.run_timed(["bash", "-c", "echo \"Running stage 'train':\"; exit 3"])

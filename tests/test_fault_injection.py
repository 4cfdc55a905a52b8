"""The fault-injection benchmark's short version: the debug pipeline SIGKILLed inside a
checkpoint write and again before the evaluation writes its outputs, ``dvc repro`` after each,
ends with the uninterrupted run's outputs (the agent bit for bit; ``benchmarks/fault_injection.py``
has the whole comparison, and runs the ≥ 20 random kills of the study)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.helpers import REPO

pytest.importorskip("mlflow")


def test_killed_inside_a_checkpoint_write_and_before_evaluating_ends_equal(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "fault_injection", REPO / "benchmarks" / "fault_injection.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    points = ["checkpoint.state:2", "evaluate.write"]
    status = module.main(
        ["--points", *points, "--per-chain", "2", "--env-steps", "600"]
        + ["--out", str(tmp_path / "out")]
        + ["--workdir", str(tmp_path / "work")]
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert status == 0, summary
    totals = summary["totals"]
    assert totals["kills_landed"] == 2 and totals["kills_by_stage"] == {"train": 1, "evaluate": 1}
    assert totals["chains"] == totals["chains_equal_to_uninterrupted"] == 1

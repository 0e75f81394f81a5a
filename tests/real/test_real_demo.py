"""``brainuad demo --data`` runs the same chain on the real folder in ../shared/data (skipped when it is absent)."""

import json

import pytest

from brainuad.cli import main

pytestmark = pytest.mark.real


def test_demo_on_the_real_data_folder(shared_data, tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--data", str(shared_data), "--out", str(out), "--size", "tiny", "--minutes", "0.1"]
    assert main([*args, "--device", "cpu", "--quiet"]) == 0
    assert "SYNTHETIC" not in capsys.readouterr().out
    summary = json.loads((out / "evaluation" / "segment" / "summary.json").read_text())
    # BraTS, stroke and MS cases found; tuning and reported cases never mixed.
    assert summary["cases"] >= 4 and summary["tuning_cases"]
    assert not set(summary["tuning_cases"]) & set(summary["reported_cases"])
    report = (out / "report.html").read_text()
    assert "SYNTHETIC" not in report and str(shared_data) in report

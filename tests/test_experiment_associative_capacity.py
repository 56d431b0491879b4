"""`vlnkit experiment associative_capacity` end to end at tiny sizes: results.json holds the tables, the plots
are written, the controls hold, and an interrupted sweep recomputes only its unfinished units (identically)."""

import json

import pytest

from vlnkit.eval.experiments.runner import run_experiment

TINY = ["d_k=[8,16]", "trials=2", "n_max_factor=4", "points_per_octave=2", "ltm.places=[1,2,8]", "ltm.trials=1",
        "lightning.d_k=8", "lightning.d_v=8", "lightning.trials=1", "lightning.heads=2", "progress=false",
        "++ltm.agent_settings.memory_overrides.ltm.depth=1"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tests/conftest.py


def test_tiny_run_writes_tables_plots_and_resumes_unit_by_unit(tmp_path):
    run_dir = run_experiment("associative_capacity", [*TINY, f"out={tmp_path}"])
    saved = json.loads((run_dir / "results.json").read_text())
    titles = [table["title"] for table in saved["tables"]]
    for expected in ("Hebbian retrieval against stored pairs", "Capacity N* per metric",
                     "Fitted slopes of log N* against log d_k", "LTM capacity: places held before recall degrades"):
        assert expected in titles
    assert any(title.startswith("Mem4Nav LTM token store") for title in titles)
    assert any(title.startswith("Lightning-attention state") for title in titles)
    assert all(table["rows"] for table in saved["tables"])
    for plot in saved["plots"]:
        assert (run_dir / plot).stat().st_size > 0
    assert "## Experiment `associative_capacity`" in (run_dir / "results.md").read_text()

    results = saved["results"]
    ortho = results["pairs"]["orthonormal"]["16"]
    assert ortho["sizes"][-1] == 16
    assert all(abs(c - 1.0) < 1e-12 for c in ortho["curves"]["hebbian"]["mean_cos"])
    for kind in ("random", "correlated"):
        for rule in ("hebbian", "delta", "softmax"):
            curves = results["pairs"][kind]["8"]["curves"][rule]
            assert curves["mean_cos"][0] == pytest.approx(1.0, abs=1e-5)   # N = 1
    assert results["ltm"]["dim"] == 376                                    # the modular agent's embedding
    for probe in results["ltm"]["probes"].values():
        assert probe["curves"]["recall_at_1"][0] == 1.0
    slopes = results["lightning"]["slopes"]
    assert slopes[0] == 0.0 and len(slopes) == 3

    checkpoints = run_dir / "checkpoints"
    kept = checkpoints / "pairs_random_dk8.pt"
    stamp = kept.stat().st_mtime_ns
    (checkpoints / "pairs_random_dk16.pt").unlink()
    (run_dir / "results.json").unlink()
    run_experiment("associative_capacity", [*TINY, f"out={tmp_path}"])
    assert kept.stat().st_mtime_ns == stamp
    again = json.loads((run_dir / "results.json").read_text())["results"]
    assert again["pairs"]["random"]["16"] == results["pairs"]["random"]["16"]
    assert again["capacity"] == results["capacity"]

"""Runner backends: identical per-episode results on inprocess, vector and Ray; retries and failed episodes."""

import json
import re

import pytest

from vlnkit.config import load_config
from vlnkit.eval.runner import evaluate
from vlnkit.eval.tasks import get_task

ray = pytest.importorskip("ray", reason="ray is not installed (pip install ray)")

LIMIT = 8


@pytest.fixture(scope="module")
def city_cache(tmp_path_factory):
    """A private cache for the built-in synthetic city, shared by the module's tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLNKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def ray_cluster():
    """One local two-CPU Ray cluster for the module (the runner reuses a running instance)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def run(out, *extra, progress=False):
    cfg = load_config("eval", [f"out={out}", f"progress={progress}", f"limit={LIMIT}", *extra])
    return evaluate(cfg)


def episodes_by_id(out):
    lines = (out / "episodes.jsonl").read_text().splitlines()
    return {rec["episode_id"]: rec for rec in map(json.loads, lines)}, len(lines)


def comparable(metrics):
    """metrics.json without the config (which names the runner and the folder)."""
    return {k: v for k, v in metrics.items() if k != "config"}


def test_every_backend_gives_the_same_episodes_and_metrics(city_cache, ray_cluster, tmp_path, capsys):
    outs = {
        "inprocess": (tmp_path / "inprocess", ["runner=inprocess"]),
        "vector": (tmp_path / "vector", ["runner=vector", "workers=2"]),
        "ray": (tmp_path / "ray", ["runner=ray", "workers=2"]),
    }
    metrics = {name: run(out, "agent=random", "seed=5", *extra, progress=True) for name, (out, extra) in outs.items()}
    bars = capsys.readouterr().err
    for name in outs:  # the progress bar shows episodes/s and the running TC on every backend
        assert re.search(rf"\[{name}\]: 100%\|.*{LIMIT}/{LIMIT} .*ep/s, TC=\d\.\d{{3}}, failed=0\]", bars), bars[-500:]
    episodes = {name: episodes_by_id(out) for name, (out, _) in outs.items()}
    reference, count = episodes["inprocess"]
    assert count == LIMIT and len(reference) == LIMIT
    assert len({len(r["actions"]) for r in reference.values()}) > 1  # the random walks differ from each other
    assert episodes["vector"] == (reference, LIMIT)
    assert episodes["ray"] == (reference, LIMIT)
    assert comparable(metrics["vector"]) == comparable(metrics["inprocess"])
    assert comparable(metrics["ray"]) == comparable(metrics["inprocess"])
    submissions = {name: (out / "submission.jsonl").read_text() for name, (out, _) in outs.items()}
    assert submissions["ray"] == submissions["vector"] == submissions["inprocess"]


def first_ids(n):
    """The ids of the first ``n`` episodes of the synthetic city's dev split."""
    cfg = load_config("eval", [])
    task = get_task("street")
    env = task.make_env(cfg, task.resolve_data_dir(cfg))
    return [ep.episode_id for ep in task.episodes(env)[:n]]


@pytest.mark.parametrize("runner", ["ray", "vector"])
def test_raising_agents_and_dying_workers_are_retried_then_recorded(city_cache, ray_cluster, tmp_path, runner):
    always, once, crash = first_ids(3)
    reference = run(tmp_path / "ref", "agent=random")
    expected, _ = episodes_by_id(tmp_path / "ref")
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / runner
    metrics = run(
        out, f"runner={runner}", "workers=2", "max_retries=1", "imports=[runner_agents]",
        "agent=random", "agent.name=faulty", f"+agent.fail_ids=[{always}]", f"+agent.raise_once_ids=[{once}]",
        f"+agent.crash_once_ids=[{crash}]", f"+agent.marker_dir={markers}",
    )
    got, count = episodes_by_id(out)
    assert count == LIMIT and set(got) == set(expected)
    failed = got[always]
    assert failed["failed"] is True and failed["attempts"] == 2
    assert failed["error"] == f"ValueError: agent refuses episode {always}"
    assert "runner_agents.py" in failed["traceback"]
    assert failed["actions"] == [] and failed["route_panoids"] == [expected[always]["route_panoids"][0]]
    assert failed["metrics"]["task_completion"] == 0.0
    for episode_id in (once, crash):  # retried once, then exactly the random agent's episode
        assert got[episode_id].pop("attempts") == 2
        assert got[episode_id] == expected[episode_id]
    assert metrics["num_failed"] == 1 and metrics["failed_episodes"] == [always]
    tc = [got[i]["metrics"]["task_completion"] for i in expected]
    assert metrics["task_completion"] == pytest.approx(sum(tc) / LIMIT)
    assert reference["num_failed"] == 0


def test_inprocess_failure_without_retries(city_cache, tmp_path):
    (always,) = first_ids(1)
    metrics = run(tmp_path / "run", "max_retries=0", "imports=[runner_agents]", "agent=random", "agent.name=faulty",
                  f"+agent.fail_ids=[{always}]")
    got, count = episodes_by_id(tmp_path / "run")
    assert count == LIMIT
    assert got[always]["attempts"] == 1 and got[always]["failed"] is True
    assert metrics["failed_episodes"] == [always]
    assert all("failed" not in rec for episode_id, rec in got.items() if episode_id != always)


def test_unknown_runner_is_refused(city_cache, tmp_path):
    with pytest.raises(ValueError, match="unknown runner 'threads'"):
        run(tmp_path / "run", "runner=threads")

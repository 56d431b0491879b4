"""Runs that survive faults: SIGKILL and restart, a corrupt line mid-file, a lost newline, and runs that
must not share a folder (different dataset), while another runner may resume a run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlnkit.config import load_config
from vlnkit.envs.datasets import StreetEpisode, write_episodes, write_graph
from vlnkit.eval.runner import CorruptRunError, evaluate, read_finished

from test_street_env import grid_graph

TESTS = Path(__file__).resolve().parent
NUM_EPISODES = 16


def grid_episodes(n: int = NUM_EPISODES) -> list[StreetEpisode]:
    """``n`` Touchdown routes on the 5x5 grid: three hops north from each bottom-row node, then east/west."""
    eps = []
    for i in range(n):
        c = i % 5
        route = [f"n{r}_{c}" for r in range(4)] + [f"n3_{c + 1 if c < 4 else c - 1}"]
        eps.append(StreetEpisode(str(100 + i), "touchdown", f"route {i}", tuple(route), 0.0, 90.0))
    return eps


@pytest.fixture
def release(tmp_path):
    """A release folder: the 5x5 grid and :data:`NUM_EPISODES` routes in ``dev``."""
    root = tmp_path / "release"
    write_graph(grid_graph(), root)
    write_episodes(grid_episodes(), root / "data" / "dev.json")
    return root


def overrides(release, out, *extra):
    """Command-line overrides of a run on ``release`` (10 steps at most, so episodes stay short)."""
    return ["task=touchdown", f"data_dir={release}", f"out={out}", "progress=false", "task.max_steps=10", *extra]


def run(release, out, *extra):
    return evaluate(load_config("eval", overrides(release, out, *extra)))


def lines_of(out):
    return (out / "episodes.jsonl").read_text().splitlines()


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc's children lists)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(children - found)
            found |= children
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_sigkill_then_same_command_finishes_without_loss_or_duplicates(release, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "vlnkit.cli", "eval",
               *overrides(release, out, "agent=random", "agent.name=slow", "+agent.delay_ms=40",
                          "imports=[runner_agents]", "runner=vector", "workers=2")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / "episodes.jsonl"
    deadline = time.monotonic() + 60
    while not (log.is_file() and log.read_text().count("\n") >= 3):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the run wrote no episodes"
        time.sleep(0.02)
    workers = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    killed_at = log.read_bytes()
    assert 3 <= len(read_finished(log)) < NUM_EPISODES
    assert workers, "the vector runner started no worker processes"
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers), "worker processes outlived the killed driver"

    done = subprocess.run(command, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    final = log.read_bytes()
    assert final.startswith(killed_at[: killed_at.rfind(b"\n") + 1])  # finished lines kept as they were
    ids = [json.loads(line)["episode_id"] for line in final.decode().splitlines()]
    assert sorted(ids) == sorted(ep.episode_id for ep in grid_episodes())  # each episode exactly once

    reference = tmp_path / "reference"
    run(release, reference, "agent=random")  # the slow agent acts exactly like the random agent
    by_id = {json.loads(line)["episode_id"]: json.loads(line) for line in final.decode().splitlines()}
    assert by_id == {json.loads(line)["episode_id"]: json.loads(line) for line in lines_of(reference)}
    assert json.loads((out / "metrics.json").read_text())["num_episodes"] == NUM_EPISODES


def test_corrupt_line_before_the_last_stops_the_run_and_changes_nothing(release, tmp_path):
    out = tmp_path / "run"
    run(release, out, "agent=random", "limit=3")
    original = lines_of(out)
    damaged = [original[0], '{"episode_id": "101", "route_panoids": [', original[2]]
    (out / "episodes.jsonl").write_text("\n".join(damaged) + "\n")
    with pytest.raises(CorruptRunError, match=r"episodes\.jsonl:2: .*Delete that line"):
        run(release, out, "agent=random", "limit=3")
    assert lines_of(out) == damaged
    (out / "episodes.jsonl").write_text("\n".join([original[0], original[2]]) + "\n")  # the documented repair
    run(release, out, "agent=random", "limit=3")
    assert lines_of(out) == [original[0], original[2], original[1]]  # only the deleted episode ran again


def test_line_without_episode_id_mid_file_is_corrupt(release, tmp_path):
    out = tmp_path / "run"
    run(release, out, "agent=random", "limit=2")
    first, second = lines_of(out)
    (out / "episodes.jsonl").write_text("\n".join([first, '{"route_panoids": []}', second]) + "\n")
    with pytest.raises(CorruptRunError, match=":2: not an episode record"):
        read_finished(out / "episodes.jsonl")


def test_complete_last_line_without_newline_gets_it_back(release, tmp_path):
    out = tmp_path / "run"
    run(release, out, "agent=random", "limit=3")
    complete = lines_of(out)
    log = out / "episodes.jsonl"
    log.write_text("\n".join(complete[:2]))  # the crash came between a record and its newline
    assert set(read_finished(log)) == {"100", "101"}
    assert log.read_text() == "\n".join(complete[:2]) + "\n"
    run(release, out, "agent=random", "limit=3")
    assert lines_of(out) == complete


def test_changed_dataset_is_refused_but_another_runner_may_resume(release, tmp_path):
    out = tmp_path / "run"
    run(release, out, "agent=random", "limit=2")
    before = lines_of(out)
    run(release, out, "agent=random", "limit=2", "runner=vector", "workers=2", "max_retries=5")
    assert lines_of(out) == before
    edited = grid_episodes()
    edited[1] = StreetEpisode("101", "touchdown", "a different instruction", edited[1].route, 0.0, 90.0)
    write_episodes(edited, release / "data" / "dev.json")
    with pytest.raises(ValueError, match="different dataset"):
        run(release, out, "agent=random", "limit=2")
    assert lines_of(out) == before

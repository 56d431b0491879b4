"""The synthetic city release: graph, scene and episodes checked from the written files alone.

Everything is parsed here by hand (csv, json) and measured with independent formulas (haversine,
great-circle bearing), so no expectation comes from the generator itself.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import networkx as nx
import pytest

from vlnkit.envs.synth.city import generate_city

SEED = 7
FILES = (
    "graph/nodes.txt",
    "graph/links.txt",
    "graph/landmarks.json",
    "graph/scene.jsonl",
    "data/train.json",
    "data/dev.json",
    "data/test.json",
    "data/memory.json",
)
TURN_WORDS = re.compile(r"\b(?:turn|take a|make a)\s+(left|right|around)\b", re.IGNORECASE)


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


def bearing(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lng2 - lng1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def angle_between(a: float, b: float) -> float:
    return 180.0 - abs(abs(a - b) % 360.0 - 180.0)


class Release:
    """The files of one generated city, parsed."""

    def __init__(self, root: Path, summary: dict) -> None:
        self.root = root
        self.summary = summary
        with open(root / "graph/nodes.txt", newline="") as f:
            self.node_rows = list(csv.reader(f))
        with open(root / "graph/links.txt", newline="") as f:
            self.link_rows = list(csv.reader(f))
        self.pos = {r[0]: (float(r[2]), float(r[3])) for r in self.node_rows}
        self.heading = {(r[0], r[2]): float(r[1]) for r in self.link_rows}
        self.out_degree: dict[str, int] = {}
        for r in self.link_rows:
            self.out_degree[r[0]] = self.out_degree.get(r[0], 0) + 1
        self.landmarks = {lm["id"]: lm for lm in json.loads((root / "graph/landmarks.json").read_text())}
        self.scene = [json.loads(line) for line in (root / "graph/scene.jsonl").read_text().splitlines()]
        self.visible = {s["panoid"]: {lm["id"]: lm for lm in s["landmarks"]} for s in self.scene}
        self.splits = {
            split: [json.loads(line) for line in (root / f"data/{split}.json").read_text().splitlines()]
            for split in ("train", "dev", "test", "memory")
        }

    def records(self) -> list[dict]:
        return [r for recs in self.splits.values() for r in recs]

    def route_turns(self, route: list[str]) -> list[str]:
        """Turns along a route from the link headings: left/right beyond 45 degrees, around beyond 135."""
        hs = [self.heading[(a, b)] for a, b in zip(route[:-1], route[1:])]
        turns = []
        for h_in, h_out in zip(hs[:-1], hs[1:]):
            delta = (h_out - h_in + 180.0) % 360.0 - 180.0
            if abs(delta) > 135.0:
                turns.append("around")
            elif abs(delta) >= 45.0:
                turns.append("right" if delta > 0 else "left")
        return turns


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Release:
    root = tmp_path_factory.mktemp("synth_city")
    return Release(root, generate_city(root, seed=SEED, size="small"))


def test_same_seed_same_bytes_other_seed_differs(city: Release, tmp_path: Path) -> None:
    generate_city(tmp_path / "again", seed=SEED, size="small")
    generate_city(tmp_path / "other", seed=SEED + 1, size="small")
    for name in FILES:
        original = (city.root / name).read_bytes()
        assert (tmp_path / "again" / name).read_bytes() == original, name
        assert (tmp_path / "other" / name).read_bytes() != original, name


def test_summary_matches_files(city: Release) -> None:
    s = city.summary
    assert s["nodes"] == len(city.node_rows) and s["links"] == len(city.link_rows)
    assert s["landmarks"] == len(city.landmarks)
    assert s["episodes"] == {split: len(recs) for split, recs in city.splits.items()}
    json.dumps(s)


def test_graph_size_ids_and_connectivity(city: Release) -> None:
    assert 1500 <= len(city.node_rows) <= 2500
    assert all(len(r) == 4 for r in city.node_rows) and all(len(r) == 3 for r in city.link_rows)
    panoids = [r[0] for r in city.node_rows]
    assert len(set(panoids)) == len(panoids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", p) for p in panoids)
    g = nx.DiGraph()
    g.add_nodes_from(panoids)
    g.add_edges_from((r[0], r[2]) for r in city.link_rows)
    assert g.number_of_edges() == len(city.link_rows)
    assert nx.is_strongly_connected(g)
    degrees = sorted(city.out_degree.values())
    assert degrees[0] == 1, "expected some dead ends"
    assert sum(d >= 3 for d in degrees) >= 50, "expected intersections"


def test_headings_are_integers_that_match_geometry(city: Release) -> None:
    for r in city.node_rows:
        assert re.fullmatch(r"\d{1,3}", r[1]) and 0 <= int(r[1]) < 360
    lengths = []
    for src, h, dst in city.link_rows:
        assert re.fullmatch(r"\d{1,3}", h) and 0 <= int(h) < 360
        (lat1, lng1), (lat2, lng2) = city.pos[src], city.pos[dst]
        assert angle_between(int(h), bearing(lat1, lng1, lat2, lng2)) <= 3.0
        lengths.append(haversine_m(lat1, lng1, lat2, lng2))
    lengths.sort()
    assert 7.0 <= lengths[len(lengths) // 2] <= 13.0
    assert lengths[0] > 3.0


def test_scene_lines_follow_nodes_and_agree_with_landmarks(city: Release) -> None:
    assert [s["panoid"] for s in city.scene] == [r[0] for r in city.node_rows]
    assert sum(len(s["landmarks"]) for s in city.scene) / len(city.scene) >= 3
    categories = {lm["category"] for lm in city.landmarks.values()}
    for needed in ("bank", "cafe", "pharmacy", "traffic light", "tree", "fire hydrant", "mailbox", "bus stop"):
        assert needed in categories
    for s in city.scene[::7]:
        lat, lng = city.pos[s["panoid"]]
        for seen in s["landmarks"]:
            lm = city.landmarks[seen["id"]]
            assert (seen["category"], seen["colour"], seen["text"]) == (lm["category"], lm["colour"], lm["text"])
            dist = haversine_m(lat, lng, lm["lat"], lm["lng"])
            assert abs(dist - seen["distance"]) <= 0.3 and dist <= 25.5
            if dist > 2.0:
                assert angle_between(seen["heading"], bearing(lat, lng, lm["lat"], lm["lng"])) <= 2.0


def test_records_are_mixed_and_splits_are_apart(city: Release) -> None:
    for split, recs in city.splits.items():
        touchdown = [r for r in recs if "route_id" in r]
        map2seq = [r for r in recs if "id" in r and "route_id" not in r]
        assert touchdown and map2seq and len(touchdown) + len(map2seq) == len(recs), split
        assert {r["city"] for r in touchdown} == {"synth"}
        for r in touchdown:
            assert r["start_heading"] == 0.0 and isinstance(r["end_heading"], float)
            assert r["main_pano"] == r["route_panoids"][-1] and r["full_text"].startswith(r["navigation_text"])
        for r in map2seq:
            first = (r["route_panoids"][0], r["route_panoids"][1])
            assert isinstance(r["start_heading"], int) and r["start_heading"] == city.heading[first]
            assert isinstance(r["instructions_id"], int)
    assert 250 <= len(city.splits["train"]) <= 350
    assert 80 <= len(city.splits["dev"]) <= 120 and 80 <= len(city.splits["test"]) <= 120
    nodes = {split: {p for r in recs for p in r["route_panoids"]} for split, recs in city.splits.items()}
    assert not nodes["train"] & nodes["dev"] and not nodes["train"] & nodes["test"] and not nodes["dev"] & nodes["test"]
    assert not nodes["train"] & nodes["memory"], "the memory split lies in the unseen areas"
    routes = [tuple(r["route_panoids"]) for r in city.records()]
    assert len(set(routes)) == len(routes), "no route is in two splits"
    ids = [r.get("route_id", r.get("id")) for r in city.records()]
    assert len(set(ids)) == len(ids)


def test_routes_are_valid_paths_with_intersections(city: Release) -> None:
    for r in city.records():
        route = r["route_panoids"]
        assert 30 <= len(route) <= 60
        assert all((a, b) in city.heading for a, b in zip(route[:-1], route[1:]))
        assert sum(city.out_degree[p] >= 3 for p in set(route)) >= 2
        assert city.route_turns(route), "every route turns at least once"


def test_turn_words_match_the_route(city: Release) -> None:
    for r in city.records():
        words = [w.lower() for w in TURN_WORDS.findall(r["navigation_text"])]
        assert words == city.route_turns(r["route_panoids"]), r["navigation_text"]


def test_landmark_phrases_are_seen_from_the_route(city: Release) -> None:
    mentioned = 0
    for r in city.records():
        assert len(r["landmarks"]) == len(r["landmark_ids"])
        text = r["navigation_text"].lower()
        for phrase, lm_id in zip(r["landmarks"], r["landmark_ids"]):
            assert phrase.lower() in text
            lm = city.landmarks[lm_id]
            assert phrase in (lm["category"], f"{lm['colour']} {lm['category']}", lm["text"])
            dist = min(
                haversine_m(*city.pos[p], lm["lat"], lm["lng"]) for p in r["route_panoids"] if lm_id in city.visible[p]
            )
            assert dist <= 30.0
            mentioned += 1
    assert mentioned >= 2 * len(city.records())


def test_a_share_of_routes_come_back_to_a_landmark(city: Release) -> None:
    def revisits(route: list[str]) -> bool:
        """Some landmark is seen, left more than 40 m behind, and seen again."""
        seen_at: dict[str, list[int]] = {}
        for k, p in enumerate(route):
            for lm_id in city.visible[p]:
                seen_at.setdefault(lm_id, []).append(k)
        for lm_id, ks in seen_at.items():
            lm = city.landmarks[lm_id]
            for k0, k1 in zip(ks[:-1], ks[1:]):
                if any(haversine_m(*city.pos[route[k]], lm["lat"], lm["lng"]) > 40.0 for k in range(k0 + 1, k1)):
                    return True
        return False

    records = city.records()
    share = sum(revisits(r["route_panoids"]) for r in records) / len(records)
    assert share >= 0.2
    with_memory_text = [r for r in records if re.search(r"\bback (to|at|past)\b", r["navigation_text"])]
    assert len(with_memory_text) >= 0.15 * len(records)


def test_memory_split_has_each_kind_equally_with_true_gaps(city: Release) -> None:
    """50 episodes per kind; a return or loop route stands on one panoid twice, memory_gap moves apart
    (passing the anchor, being back at it; a loop that stops there ends one link short of it); a count stop names the second or third of a category."""
    records = city.splits["memory"]
    kinds = [r["memory"] or "plain" for r in records]
    assert {k: kinds.count(k) for k in set(kinds)} == {"plain": 50, "count": 50, "return": 50, "loop": 50}
    for r in records:
        route, gap = r["route_panoids"], r["memory_gap"]
        if r["memory"] is None:
            assert gap is None and len(set(route)) == len(route)
        elif r["memory"] in ("return", "loop"):
            # back at the anchor's panoid, or (a loop that stops on coming back) one link before it at the goal
            back = [i for i in range(len(route) - gap) if route[i] == route[i + gap]
                    or (i + gap == len(route) - 1 and (route[-1], route[i]) in city.heading)]
            assert back, r["navigation_text"]
            assert re.search(r"\bback\b", r["navigation_text"]), r["navigation_text"]
        else:
            assert 1 <= gap < len(route)
            assert re.search(r"stop at the (second|third) [a-z ]+ on your (left|right)", r["navigation_text"], re.I)
    loops = sorted(r["memory_gap"] for r in records if r["memory"] == "loop")
    assert loops[len(loops) // 2] >= 20, "loops come back after a block or more"


def test_a_layout_without_loops_still_gives_a_city() -> None:
    """City seed 9's unseen half holds no loop route: the city is made, its memory split has the other kinds
    in full and no loops, and a warning says so (it used to fail to generate at all)."""
    from vlnkit.envs.synth.city import build_city

    with pytest.warns(UserWarning, match="ran out of loop routes after 0 of 50"):
        made = build_city(9, "small")
    kinds = [ep.record.get("memory") or "plain" for ep in made.episodes["memory"]]
    assert {k: kinds.count(k) for k in set(kinds)} == {"plain": 50, "count": 50, "return": 50}
    assert {split: len(made.episodes[split]) for split in ("train", "dev", "test")} == {"train": 300, "dev": 100,
                                                                                     "test": 100}

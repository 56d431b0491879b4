"""Street dataset readers: graph and episode formats, validation errors, round trips, real sample."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vlnkit.envs.datasets import (
    DatasetFormatError,
    StreetEpisode,
    check_street_release,
    list_street_splits,
    load_street_split,
    read_episodes,
    read_graph,
    street_split_path,
    write_episodes,
    write_graph,
)
from vlnkit.envs.street.graph import StreetGraph

NODES_4 = """\
A,10,40.700000,-74.000000
B,20,40.700100,-74.000100
C,30.5,40.700200,-74.000200
D,0,40.700300,-74.000300
"""
NODES_5 = """\
A,10,40.700000,-74.000000,seen
B,20,40.700100,-74.000100,unseen
C,30.5,40.700200,-74.000200,seen
D,0,40.700300,-74.000300,seen
"""
# Deliberately not grouped by source; C -> D has no reverse link.
LINKS = """\
A,90,B
B,270,A
A,180,C
C,0,A
B,45,D
D,225,B
C,90,D
"""


def make_release(root: Path, nodes: str = NODES_4, links: str = LINKS) -> Path:
    """A release folder with ``graph/nodes.txt`` and ``graph/links.txt`` holding the given text."""
    (root / "graph").mkdir(parents=True, exist_ok=True)
    (root / "graph" / "nodes.txt").write_text(nodes)
    (root / "graph" / "links.txt").write_text(links)
    return root


def write_lines(path: Path, records: list) -> Path:
    """Write JSON lines (strings are written verbatim)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def touchdown_record(route_id: int | str = 4754, route: list[str] | None = None) -> dict:
    return {
        "city": "nyc",
        "route_id": route_id,
        "pre_center": '{"x":0.41,"y":0.59}',
        "navigation_text": "Turn so that the trees are to your left.",
        "route_panoids": ["A", "B", "D"] if route is None else route,
        "start_heading": 0.0,
        "end_heading": 470.5,
        "elapsed": '{"minute":2,"second":54}',
        "follower_stats": [{"num_attempts": "1", "follower_success": "yes"}],
    }


def map2seq_record(episode_id: int | str = 7, route: list[str] | None = None) -> dict:
    return {
        "id": episode_id,
        "instructions_id": 123,
        "route_panoids": ["A", "C", "D"] if route is None else route,
        "navigation_text": "Go straight and stop at the corner.",
        "start_heading": 180,
    }


# ------------------------------------------------------------------------------------------------
# Graph reader
# ------------------------------------------------------------------------------------------------


def test_read_graph_four_columns(tmp_path: Path) -> None:
    graph = read_graph(make_release(tmp_path))
    assert graph.panoids == ("A", "B", "C", "D")
    np.testing.assert_array_equal(graph.yaw, [10.0, 20.0, 30.5, 0.0])
    np.testing.assert_array_equal(graph.lat, [40.7, 40.7001, 40.7002, 40.7003])
    np.testing.assert_array_equal(graph.lng, [-74.0, -74.0001, -74.0002, -74.0003])
    assert graph.seen is None
    # Outgoing links grouped by source, each source's links in file order.
    np.testing.assert_array_equal(graph.out_ptr, [0, 2, 4, 6, 7])
    np.testing.assert_array_equal(graph.out_dst, [1, 2, 0, 3, 0, 3, 1])
    np.testing.assert_array_equal(graph.out_heading, [90, 180, 270, 45, 0, 90, 225])


def test_read_graph_five_columns_and_graph_folder(tmp_path: Path) -> None:
    make_release(tmp_path, nodes=NODES_5)
    graph = read_graph(tmp_path / "graph")
    np.testing.assert_array_equal(graph.seen, [True, False, True, True])
    assert graph.num_links == 7


def test_read_graph_accepts_crlf(tmp_path: Path) -> None:
    make_release(tmp_path, nodes=NODES_4.replace("\n", "\r\n"), links=LINKS.replace("\n", "\r\n"))
    graph = read_graph(tmp_path)
    assert graph.panoids == ("A", "B", "C", "D")
    np.testing.assert_array_equal(graph.out_dst, [1, 2, 0, 3, 0, 3, 1])


def _replace_line(text: str, line: int, new: str) -> str:
    lines = text.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


NODE_CASES = {
    "missing_column": (_replace_line(NODES_4, 2, "B,20,40.700100"), 2, "lng"),
    "extra_column": (_replace_line(NODES_4, 3, "C,30.5,40.700200,-74.000200,seen"), 3, "column 5"),
    "first_line_three_columns": (_replace_line(NODES_4, 1, "A,10,40.7"), 1, "lng"),
    "seen_column_dropped": (_replace_line(NODES_5, 2, "B,20,40.700100,-74.000100"), 2, "seen"),
    "blank_line_inside": (_replace_line(NODES_4, 2, ""), 2, "pano_yaw_angle"),
    "truncated_last_line": (NODES_4[: NODES_4.rindex(",")], 4, "lng"),
    "non_numeric_yaw": (_replace_line(NODES_4, 2, "B,north,40.700100,-74.000100"), 2, "pano_yaw_angle"),
    "nan_lat": (_replace_line(NODES_4, 3, "C,30,nan,-74.000200"), 3, "lat"),
    "inf_lng": (_replace_line(NODES_4, 4, "D,0,40.700300,inf"), 4, "lng"),
    "lat_out_of_range": (_replace_line(NODES_4, 2, "B,20,91.0,-74.000100"), 2, "lat"),
    "lng_out_of_range": (_replace_line(NODES_4, 3, "C,30,40.7,-180.5"), 3, "lng"),
    "bad_seen_value": (_replace_line(NODES_5, 4, "D,0,40.700300,-74.000300,Seen"), 4, "seen"),
    "duplicate_node": (_replace_line(NODES_4, 4, "B,0,40.700300,-74.000300"), 4, "panoid"),
    "empty_panoid": (_replace_line(NODES_4, 3, ",30,40.700200,-74.000200"), 3, "panoid"),
}


@pytest.mark.parametrize("case", sorted(NODE_CASES))
def test_malformed_nodes(tmp_path: Path, case: str) -> None:
    nodes, line, field = NODE_CASES[case]
    make_release(tmp_path, nodes=nodes)
    with pytest.raises(DatasetFormatError) as info:
        read_graph(tmp_path)
    err = info.value
    assert (err.path, err.line, err.field) == (tmp_path / "graph" / "nodes.txt", line, field)
    assert str(err).startswith(f"{tmp_path / 'graph' / 'nodes.txt'}:{line}: field '{field}': ")


LINK_CASES = {
    "missing_column": (_replace_line(LINKS, 3, "A,180"), 3, "end_panoid"),
    "extra_column": (_replace_line(LINKS, 2, "B,270,A,x"), 2, "column 4"),
    "truncated_last_line": (LINKS.rstrip("\n")[:-2], 7, "end_panoid"),
    "non_numeric_heading": (_replace_line(LINKS, 5, "B,east,D"), 5, "heading"),
    "inf_heading": (_replace_line(LINKS, 6, "D,-inf,B"), 6, "heading"),
    "unknown_start": (_replace_line(LINKS, 4, "Z,0,A"), 4, "start_panoid"),
    "unknown_end": (_replace_line(LINKS, 7, "C,90,Y"), 7, "end_panoid"),
    "duplicate_link": (LINKS + "A,95,B\n", 8, "end_panoid"),
}


@pytest.mark.parametrize("case", sorted(LINK_CASES))
def test_malformed_links(tmp_path: Path, case: str) -> None:
    links, line, field = LINK_CASES[case]
    make_release(tmp_path, links=links)
    with pytest.raises(DatasetFormatError) as info:
        read_graph(tmp_path)
    err = info.value
    assert (err.path, err.line, err.field) == (tmp_path / "graph" / "links.txt", line, field)


def test_unknown_link_endpoint_message_names_nodes_file(tmp_path: Path) -> None:
    make_release(tmp_path, links=_replace_line(LINKS, 4, "Z,0,A"))
    expected = r"links\.txt:4: field 'start_panoid': panoid 'Z' is not a node of .*nodes\.txt"
    with pytest.raises(DatasetFormatError, match=expected):
        read_graph(tmp_path)


@pytest.mark.parametrize("name", ["nodes.txt", "links.txt"])
@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_graph_file(tmp_path: Path, name: str, content: str) -> None:
    make_release(tmp_path)
    (tmp_path / "graph" / name).write_text(content)
    with pytest.raises(DatasetFormatError, match="empty file") as info:
        read_graph(tmp_path)
    assert (info.value.path, info.value.line) == (tmp_path / "graph" / name, None)


@pytest.mark.parametrize("name", ["nodes.txt", "links.txt"])
def test_missing_graph_file(tmp_path: Path, name: str) -> None:
    make_release(tmp_path)
    (tmp_path / "graph" / name).unlink()
    with pytest.raises(DatasetFormatError, match="file not found") as info:
        read_graph(tmp_path)
    assert (info.value.path, info.value.line, info.value.field) == (tmp_path / "graph" / name, None, None)


def test_error_string_and_pickle() -> None:
    err = DatasetFormatError("data/dev.json", 12, "route_panoids[3]", "panoid 'abc' is not a node of the graph")
    assert str(err) == "data/dev.json:12: field 'route_panoids[3]': panoid 'abc' is not a node of the graph"
    assert isinstance(err, ValueError)
    assert str(DatasetFormatError("graph/links.txt", None, None, "file not found")) == "graph/links.txt: file not found"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.line, copy.field, copy.message) == (err.path, 12, "route_panoids[3]", err.message)


@pytest.mark.parametrize("with_seen", [False, True])
def test_graph_round_trip(tmp_path: Path, with_seen: bool) -> None:
    nodes = [("p0", 0.0, 40.1, -73.9), ("p1", 359.0, 40.100001, -73.900002), ("p2", 12.5, -33.868820, 151.209296)]
    if with_seen:
        nodes = [(*n, s) for n, s in zip(nodes, [True, False, False])]
    links = [("p2", 7.25, "p0"), ("p0", 90.0, "p1"), ("p1", 270.0, "p0"), ("p0", 180.0, "p2")]
    original = StreetGraph.from_lists(nodes, links)
    write_graph(original, tmp_path)
    assert len((tmp_path / "graph" / "nodes.txt").read_text().splitlines()[0].split(",")) == (5 if with_seen else 4)
    back = read_graph(tmp_path)
    assert back.panoids == ("p0", "p1", "p2")
    for name in ("yaw", "lat", "lng", "out_ptr", "out_dst", "out_heading"):
        np.testing.assert_array_equal(getattr(back, name), getattr(original, name), err_msg=name)
    np.testing.assert_array_equal(back.out_dst, [1, 2, 0, 0])
    if with_seen:
        np.testing.assert_array_equal(back.seen, [True, False, False])
    else:
        assert back.seen is None


# ------------------------------------------------------------------------------------------------
# Episode reader
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def graph(tmp_path: Path) -> StreetGraph:
    return read_graph(make_release(tmp_path / "release"))


def test_read_touchdown_episodes(tmp_path: Path, graph: StreetGraph) -> None:
    records = [touchdown_record(4754), touchdown_record("td-2", route=["A", "C"])]
    result = read_episodes(write_lines(tmp_path / "dev.json", records), graph, task="touchdown")
    assert result.skipped == []
    first, second = result.episodes
    assert (first.episode_id, first.kind, first.route) == ("4754", "touchdown", ("A", "B", "D"))
    assert (first.start_heading, first.end_heading) == (0.0, 470.5)
    assert first.instruction == "Turn so that the trees are to your left."
    assert first.record == records[0]
    assert (second.episode_id, second.route) == ("td-2", ("A", "C"))


def test_read_map2seq_episodes(tmp_path: Path, graph: StreetGraph) -> None:
    result = read_episodes(write_lines(tmp_path / "test.json", [map2seq_record(7)]), graph, task="map2seq")
    (episode,) = result.episodes
    assert (episode.episode_id, episode.kind, episode.route) == ("7", "map2seq", ("A", "C", "D"))
    assert (episode.start_heading, episode.end_heading) == (180.0, None)
    assert episode.record["instructions_id"] == 123


def test_read_mixed_file_and_blank_trailing_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "merged_unseen.json", [touchdown_record(1), map2seq_record(2), touchdown_record(3)])
    path.write_text(path.read_text() + "\n\n   \n")
    result = read_episodes(path)
    kinds = [(e.kind, e.episode_id) for e in result.episodes]
    assert kinds == [("touchdown", "1"), ("map2seq", "2"), ("touchdown", "3")]


@pytest.mark.parametrize(
    ("task", "line", "field"), [("touchdown", 2, "id"), ("map2seq", 1, "route_id")]
)
def test_task_restricts_record_kind(tmp_path: Path, task: str, line: int, field: str) -> None:
    path = write_lines(tmp_path / "mixed.json", [touchdown_record(1), map2seq_record(2)])
    with pytest.raises(DatasetFormatError, match=f"task '{task}'") as info:
        read_episodes(path, task=task)
    assert (info.value.line, info.value.field) == (line, field)


def test_invalid_json_line(tmp_path: Path) -> None:
    truncated = '{"route_id": 2, "navigation_text": '
    path = write_lines(tmp_path / "dev.json", [touchdown_record(1), truncated, touchdown_record(3)])
    with pytest.raises(DatasetFormatError, match="invalid JSON") as info:
        read_episodes(path)
    assert (info.value.path, info.value.line, info.value.field) == (path, 2, None)


def test_blank_line_inside_episode_file(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "dev.json", [touchdown_record(1), "", touchdown_record(3)])
    with pytest.raises(DatasetFormatError, match="blank line") as info:
        read_episodes(path)
    assert info.value.line == 2


def _without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


EPISODE_CASES = {
    "touchdown_no_text": (_without(touchdown_record(), "navigation_text"), "navigation_text"),
    "touchdown_no_route": (_without(touchdown_record(), "route_panoids"), "route_panoids"),
    "touchdown_no_start_heading": (_without(touchdown_record(), "start_heading"), "start_heading"),
    "map2seq_no_text": (_without(map2seq_record(), "navigation_text"), "navigation_text"),
    "map2seq_no_route": (_without(map2seq_record(), "route_panoids"), "route_panoids"),
    "map2seq_no_start_heading": (_without(map2seq_record(), "start_heading"), "start_heading"),
    "no_id_at_all": (_without(map2seq_record(), "id"), "route_id"),
    "empty_route": (touchdown_record(route=[]), "route_panoids"),
    "route_not_a_list": (touchdown_record(route="A,B"), "route_panoids"),
    "route_item_not_string": (map2seq_record(route=["A", 3, "D"]), "route_panoids[1]"),
    "heading_as_string": ({**touchdown_record(), "start_heading": "0.0"}, "start_heading"),
    "heading_boolean": ({**map2seq_record(), "start_heading": True}, "start_heading"),
    "end_heading_string": ({**touchdown_record(), "end_heading": "111.7"}, "end_heading"),
    "text_not_string": ({**touchdown_record(), "navigation_text": ["go"]}, "navigation_text"),
    "float_id": ({**touchdown_record(), "route_id": 1.5}, "route_id"),
    "record_not_object": ([1, 2], None),
}


@pytest.mark.parametrize("case", sorted(EPISODE_CASES))
def test_malformed_episode_record(tmp_path: Path, case: str) -> None:
    record, field = EPISODE_CASES[case]
    path = write_lines(tmp_path / "dev.json", [touchdown_record(1), map2seq_record(2), record])
    with pytest.raises(DatasetFormatError) as info:
        read_episodes(path)
    assert (info.value.path, info.value.line, info.value.field) == (path, 3, field)


@pytest.mark.parametrize(
    ("route", "field", "message"),
    [
        (["A", "B", "Q"], "route_panoids[2]", "'Q' is not a node"),
        # C -> D is a link but D -> C is not: the reverse direction does not count.
        (["A", "C", "D", "C"], "route_panoids[2]", "no link from 'D' to the next route panoid 'C'"),
        (["B", "C"], "route_panoids[0]", "no link from 'B'"),
    ],
)
def test_route_invalid_in_graph(tmp_path: Path, graph: StreetGraph, route: list[str], field: str, message: str) -> None:
    path = write_lines(tmp_path / "dev.json", [touchdown_record(1), touchdown_record(2, route=route)])
    with pytest.raises(DatasetFormatError, match=message) as info:
        read_episodes(path, graph)
    assert (info.value.line, info.value.field) == (2, field)
    assert len(read_episodes(path).episodes) == 2  # without a graph routes are not checked


def test_skip_invalid_routes_with_one_warning(tmp_path: Path, graph: StreetGraph) -> None:
    records = [
        touchdown_record(1),
        touchdown_record(2, route=["A", "Q"]),
        map2seq_record(3),
        map2seq_record(4, route=["D", "C"]),
    ]
    path = write_lines(tmp_path / "dev.json", records)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = read_episodes(path, graph, on_invalid_route="skip")
    assert [e.episode_id for e in result.episodes] == ["1", "3"]
    assert [line for line, _ in result.skipped] == [2, 4]
    assert "route_panoids[1]" in result.skipped[0][1] and "route_panoids[0]" in result.skipped[1][1]
    assert len(caught) == 1 and "skipped 2 of 4 episodes" in str(caught[0].message)


def test_skip_does_not_hide_malformed_records(tmp_path: Path, graph: StreetGraph) -> None:
    records = [touchdown_record(1, route=["A", "Q"]), {**map2seq_record(), "start_heading": None}]
    path = write_lines(tmp_path / "dev.json", records)
    with pytest.raises(DatasetFormatError) as info:
        read_episodes(path, graph, on_invalid_route="skip")
    assert (info.value.line, info.value.field) == (2, "start_heading")


@pytest.mark.parametrize(
    ("records", "field", "earlier"),
    [
        ([touchdown_record(1), touchdown_record(5), map2seq_record(2), touchdown_record(5)], "route_id",
         "the Touchdown 'route_id' on line 2"),
        # VELMA's merged files: a Touchdown route_id equal to a Map2Seq id, even spelt as a string.
        ([touchdown_record(1), map2seq_record(5), touchdown_record(3), touchdown_record("5")], "route_id",
         "the Map2Seq 'id' on line 2"),
        ([map2seq_record(1), touchdown_record(5), map2seq_record(2), map2seq_record(5)], "id",
         "the Touchdown 'route_id' on line 2"),
    ],
)
def test_colliding_episode_ids_are_refused(tmp_path: Path, records: list, field: str, earlier: str) -> None:
    path = write_lines(tmp_path / "merged.json", records)
    with pytest.raises(DatasetFormatError) as info:
        read_episodes(path)
    assert (info.value.path, info.value.line, info.value.field) == (path, 4, field)
    assert f"duplicate episode id '5', already used by {earlier}" in str(info.value)


def test_colliding_ids_are_refused_even_when_skipping_routes(tmp_path: Path, graph: StreetGraph) -> None:
    # The first record is skipped for its route, but its id still collides with the second's.
    records = [touchdown_record(5, route=["A", "Q"]), map2seq_record(5)]
    path = write_lines(tmp_path / "dev.json", records)
    with pytest.raises(DatasetFormatError, match="duplicate episode id '5'") as info:
        read_episodes(path, graph, on_invalid_route="skip")
    assert info.value.line == 2


def test_bad_options_raise(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "dev.json", [touchdown_record(1)])
    with pytest.raises(ValueError, match="on_invalid_route"):
        read_episodes(path, on_invalid_route="drop")
    with pytest.raises(ValueError, match="unknown street task"):
        read_episodes(path, task="r2r")


def test_episode_round_trip_keeps_records(tmp_path: Path, graph: StreetGraph) -> None:
    records = [touchdown_record(5), touchdown_record("007"), map2seq_record(9), map2seq_record("m-1")]
    first = read_episodes(write_lines(tmp_path / "in.json", records), graph)
    write_episodes(first.episodes, tmp_path / "out.json")
    written = [json.loads(line) for line in (tmp_path / "out.json").read_text().splitlines()]
    assert written == records
    # JSON types survive too: ids stay int or str, Map2Seq's integer heading stays an integer.
    assert [type(r.get("route_id", r.get("id"))) for r in written] == [int, str, int, str]
    assert type(written[2]["start_heading"]) is int
    second = read_episodes(tmp_path / "out.json", graph)
    assert second.episodes == first.episodes
    assert [e.record for e in second.episodes] == records


def test_to_record_writes_changed_values(tmp_path: Path) -> None:
    (episode,) = read_episodes(write_lines(tmp_path / "in.json", [map2seq_record(9)])).episodes
    changed = replace(episode, episode_id="10", route=("C", "A"), start_heading=0.5)
    record = changed.to_record()
    assert (record["id"], record["route_panoids"], record["start_heading"]) == (10, ["C", "A"], 0.5)
    assert record["instructions_id"] == 123
    assert StreetEpisode("x", "touchdown", "go", ("A",), 0.0).to_record()["route_id"] == "x"


# ------------------------------------------------------------------------------------------------
# Release folders
# ------------------------------------------------------------------------------------------------


def test_split_paths_and_listing(tmp_path: Path) -> None:
    make_release(tmp_path)
    for split in ("test", "extra", "train", "dev"):
        write_lines(tmp_path / "data" / f"{split}.json", [touchdown_record(1)])
    (tmp_path / "data" / "notes.txt").write_text("not a split")
    assert street_split_path(tmp_path, "dev") == tmp_path / "data" / "dev.json"
    assert list_street_splits(tmp_path) == ["train", "dev", "test", "extra"]
    assert list_street_splits(tmp_path / "nowhere") == []


def test_load_street_split(tmp_path: Path) -> None:
    make_release(tmp_path, nodes=NODES_5)
    write_lines(tmp_path / "data" / "dev.json", [touchdown_record(1), map2seq_record(2)])
    graph, result = load_street_split(tmp_path, "dev")
    assert graph.num_nodes == 4 and graph.seen is not None
    assert [e.episode_id for e in result.episodes] == ["1", "2"]
    with pytest.raises(DatasetFormatError, match=r"split 'train' not found \(splits present: dev\)"):
        load_street_split(tmp_path, "train")


def test_check_release_collects_problems(tmp_path: Path) -> None:
    make_release(tmp_path, nodes=_replace_line(NODES_4, 3, "A,0,40.7,-74.0"))
    write_lines(tmp_path / "data" / "dev.json", [touchdown_record(1), "not json", map2seq_record(2), {"route_id": 4}])
    write_lines(tmp_path / "data" / "test.json", [touchdown_record(5, route=["A", "Q"])])
    summary = check_street_release("touchdown", tmp_path)
    nodes = tmp_path / "graph" / "nodes.txt"
    dev = tmp_path / "data" / "dev.json"
    assert summary["ok"] is False
    assert (summary["nodes"], summary["links"]) == (None, None)
    assert summary["episodes"] == {"dev": 1, "test": 1}  # no graph to check routes against
    assert summary["other_kinds"] == {"dev": 1, "test": 0}  # the Map2Seq line of the mixed file is fine
    assert summary["problems"][0].startswith(f"{nodes}:3: field 'panoid': duplicate node 'A'")
    assert [p.split(": ")[0] for p in summary["problems"][1:]] == [f"{dev}:2", f"{dev}:4"]
    json.dumps(summary)


def test_check_release_invalid_routes_error_or_skip(tmp_path: Path) -> None:
    make_release(tmp_path)
    write_lines(tmp_path / "data" / "train.json", [touchdown_record(1), touchdown_record(2, route=["D", "C"])])
    strict = check_street_release("touchdown", tmp_path)
    assert strict["ok"] is False and strict["episodes"] == {"train": 1} and strict["skipped"] == {"train": 0}
    assert strict["problems"] == [
        f"{tmp_path / 'data' / 'train.json'}:2: field 'route_panoids[0]': no link from 'D' to the next route panoid 'C'"
    ]
    lenient = check_street_release("touchdown", tmp_path, on_invalid_route="skip")
    assert lenient["ok"] is True and lenient["skipped"] == {"train": 1} and lenient["problems"] == []
    assert (lenient["nodes"], lenient["links"]) == (4, 7)


def test_check_release_missing_pieces(tmp_path: Path) -> None:
    summary = check_street_release("map2seq", tmp_path)
    assert summary["ok"] is False and summary["episodes"] == {}
    assert summary["problems"] == [
        f"{tmp_path / 'graph' / 'nodes.txt'}: file not found",
        f"{tmp_path / 'data'}: no <split>.json episode files found",
    ]


def test_check_release_reads_mixed_files_as_eval_does(tmp_path: Path) -> None:
    make_release(tmp_path)
    write_lines(tmp_path / "data" / "dev.json", [touchdown_record(1), map2seq_record(2), touchdown_record(3)])
    write_lines(tmp_path / "data" / "test.json", [map2seq_record(4)])
    touchdown = check_street_release("touchdown", tmp_path)
    assert touchdown["episodes"] == {"dev": 2, "test": 0} and touchdown["other_kinds"] == {"dev": 1, "test": 1}
    # Eval of Touchdown keeps only Touchdown records, so the Map2Seq-only test split has nothing to run.
    assert touchdown["problems"] == [f"{tmp_path / 'data' / 'test.json'}: no Touchdown episodes to evaluate "
                                     "(1 records of the other layout, 0 skipped for invalid routes)"]
    map2seq = check_street_release("map2seq", tmp_path)
    assert map2seq["ok"] is True and map2seq["episodes"] == {"dev": 1, "test": 1}


def test_check_release_reports_colliding_ids(tmp_path: Path) -> None:
    make_release(tmp_path)
    dev = write_lines(tmp_path / "data" / "dev.json", [touchdown_record(3), map2seq_record(3), map2seq_record(4)])
    summary = check_street_release("map2seq", tmp_path)
    assert summary["ok"] is False and summary["episodes"] == {"dev": 1}
    assert len(summary["problems"]) == 1
    assert summary["problems"][0].startswith(f"{dev}:2: field 'id': duplicate episode id '3', already used by "
                                             "the Touchdown 'route_id' on line 1")


def test_check_passes_the_synthetic_city(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its files mix Touchdown and Map2Seq records, which eval reads: ``vlnkit data check`` must agree."""
    from vlnkit.cli import main
    from vlnkit.envs.synth import generate_city

    made = generate_city(tmp_path, seed=0, size="small")
    for task in ("touchdown", "map2seq"):
        summary = check_street_release(task, tmp_path)
        assert summary["problems"] == [] and summary["ok"] is True
        assert sum(summary["episodes"].values()) == made["kinds"][task]
        # train 300 + dev 100 + test 100 + the memory split's 4 kinds x 50
        assert sum(summary["episodes"].values()) + sum(summary["other_kinds"].values()) == 700
    assert main(["data", "check", "task=touchdown", f"data_dir={tmp_path}"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_check_release_caps_problems_per_file(tmp_path: Path) -> None:
    make_release(tmp_path)
    write_lines(tmp_path / "data" / "dev.json", ["[]"] * 25)
    problems = check_street_release(None, tmp_path)["problems"]
    assert len(problems) == 21 and problems[-1].endswith("5 more malformed lines not listed")


# ------------------------------------------------------------------------------------------------
# Real Touchdown sample
# ------------------------------------------------------------------------------------------------


def test_sample_graph(touchdown_sample: Path) -> None:
    graph = read_graph(touchdown_sample)
    assert (graph.num_nodes, graph.num_links) == (1945, 3878)
    assert graph.seen is None
    assert graph.panoids[0] == "nWwrK4mZsWsqsni_l_ExNQ" and graph.yaw[0] == 301.0
    assert np.all(graph.yaw == np.round(graph.yaw)) and np.all(graph.out_heading == np.round(graph.out_heading))


def test_sample_episodes(touchdown_sample: Path) -> None:
    graph, result = load_street_split(touchdown_sample, "dev", task="touchdown")
    assert len(result.episodes) == 40 and result.skipped == []
    assert result.episodes[0].episode_id == "4754" and len(result.episodes[0].route) == 9
    assert all(e.start_heading == 0.0 for e in result.episodes)
    assert all(2 <= len(e.route) <= 66 for e in result.episodes)
    assert all(len(e.record) == 33 for e in result.episodes)


def test_sample_round_trip(touchdown_sample: Path, tmp_path: Path) -> None:
    graph, result = load_street_split(touchdown_sample, "dev")
    write_episodes(result.episodes, tmp_path / "data" / "dev.json")
    original = (touchdown_sample / "data" / "dev.json").read_text().splitlines()
    written = (tmp_path / "data" / "dev.json").read_text().splitlines()
    assert [json.loads(line) for line in written] == [json.loads(line) for line in original]
    write_graph(graph, tmp_path)
    nodes = (tmp_path / "graph" / "nodes.txt").read_bytes()
    assert nodes == (touchdown_sample / "graph" / "nodes.txt").read_bytes()
    # Links come back grouped by source, so compare them as a set of lines.
    links = (tmp_path / "graph" / "links.txt").read_text().splitlines()
    assert sorted(links) == sorted((touchdown_sample / "graph" / "links.txt").read_text().splitlines())


def test_check_sample_release(touchdown_sample: Path) -> None:
    summary = check_street_release("touchdown", touchdown_sample)
    assert summary == {
        "task": "touchdown",
        "data_dir": str(touchdown_sample),
        "nodes": 1945,
        "links": 3878,
        "episodes": {"dev": 40},
        "other_kinds": {"dev": 0},
        "skipped": {"dev": 0},
        "problems": [],
        "ok": True,
    }


def test_check_broken_copy_of_sample(touchdown_sample: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sample"
    shutil.copytree(touchdown_sample, copy)
    links = copy / "graph" / "links.txt"
    lines = links.read_text().splitlines()
    links.chmod(0o644)
    links.write_text("\n".join(lines[:10] + [lines[10].rsplit(",", 1)[0]] + lines[11:]) + "\n")
    summary = check_street_release("touchdown", copy)
    assert summary["ok"] is False and summary["episodes"] == {"dev": 40}
    assert summary["problems"] == [f"{links}:11: field 'end_panoid': missing column: expected 3 columns "
                                   "(start_panoid,heading,end_panoid), got 2"]

"""Hostile input for the release readers: whatever bytes a file holds, the street and VLN-CE readers
raise DatasetFormatError (naming the file) or read it; never a raw KeyError, TypeError or traceback."""

import gzip
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlnkit.envs.datasets import DatasetFormatError, read_episodes, read_graph, read_vlnce_split

from test_street_env import grid_graph

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
"""Any JSON value, NaN included."""

STREET_FIELDS = ("route_id", "id", "navigation_text", "route_panoids", "start_heading", "end_heading")


@st.composite
def street_records(draw: st.DrawFn) -> dict:
    """A Touchdown or Map2Seq record with some fields dropped or replaced by arbitrary JSON."""
    record = {"route_id": 1, "navigation_text": "go", "route_panoids": ["n0_0", "n1_0"], "start_heading": 0.0,
              "end_heading": 0.0}
    if draw(st.booleans()):
        record = {"id": 1, "navigation_text": "go", "route_panoids": ["n0_0", "n1_0"], "start_heading": 0.0}
    for key in draw(st.lists(st.sampled_from(STREET_FIELDS), max_size=3)):
        if draw(st.booleans()):
            record.pop(key, None)
        else:
            record[key] = draw(json_values)
    return record


def read_quietly(path: Path, reader, *args) -> None:
    """Call the reader: a DatasetFormatError naming ``path`` is fine, any other exception fails."""
    try:
        reader(path, *args)
    except DatasetFormatError as err:
        assert str(path) in str(err)


@FUZZ
@given(content=st.binary(max_size=200))
def test_street_episode_reader_survives_arbitrary_bytes(tmp_path, content):
    path = tmp_path / "dev.json"
    path.write_bytes(content)
    read_quietly(path, read_episodes, grid_graph())


@FUZZ
@given(records=st.lists(street_records(), min_size=1, max_size=3))
def test_street_episode_reader_survives_malformed_records(tmp_path, records):
    path = tmp_path / "dev.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    read_quietly(path, read_episodes, grid_graph())


@FUZZ
@given(nodes=st.binary(max_size=120), links=st.binary(max_size=120))
def test_street_graph_reader_survives_arbitrary_bytes(tmp_path, nodes, links):
    graph = tmp_path / "graph"
    graph.mkdir(exist_ok=True)
    (graph / "nodes.txt").write_bytes(nodes)
    (graph / "links.txt").write_bytes(links)
    try:
        read_graph(tmp_path)
    except DatasetFormatError as err:
        assert str(graph) in str(err)


@st.composite
def vlnce_documents(draw: st.DrawFn) -> dict:
    """An R2R-CE split with one episode whose fields are dropped or replaced by arbitrary JSON."""
    episode = {"episode_id": 1, "trajectory_id": 1, "scene_id": "mp3d/a/a.glb",
               "start_position": [0.0, 0.0, 0.0], "start_rotation": [0.0, 0.0, 0.0, 1.0],
               "instruction": {"instruction_text": "go", "instruction_tokens": [1]},
               "goals": [{"position": [1.0, 0.0, 0.0], "radius": 3.0}], "reference_path": [[0.0, 0.0, 0.0]],
               "info": {"geodesic_distance": 1.0}}
    for key in draw(st.lists(st.sampled_from(sorted(episode)), max_size=3)):
        if draw(st.booleans()):
            episode.pop(key, None)
        else:
            episode[key] = draw(json_values)
    document = {"episodes": [episode], "instruction_vocab": {"word_list": ["go"]}}
    if draw(st.booleans()):
        document[draw(st.sampled_from(["episodes", "instruction_vocab"]))] = draw(json_values)
    return document


@FUZZ
@given(document=vlnce_documents())
def test_vlnce_reader_survives_malformed_episodes(tmp_path, document):
    path = tmp_path / "val_unseen.json.gz"
    path.write_bytes(gzip.compress(json.dumps(document).encode()))
    read_quietly(path, read_vlnce_split)


@FUZZ
@given(content=st.binary(max_size=200), cut=st.integers(min_value=0, max_value=60))
def test_vlnce_reader_survives_truncated_and_corrupt_gzip(tmp_path, content, cut):
    valid = gzip.compress(json.dumps({"episodes": []}).encode())
    path = tmp_path / "val_unseen.json.gz"
    path.write_bytes(valid[:cut] + content)
    read_quietly(path, read_vlnce_split)

"""Readers and writers for the street dataset format (see ``shared/docs/datasets.md``).

Street tasks (Touchdown, Map2Seq, VELMA/FLAME copies) use a release folder
``<root>/graph/{nodes.txt,links.txt}`` and ``<root>/data/<split>.json`` (JSON lines, one route per line).
The synthetic generators write the same files through the writers here, so every code path is the one a
user with real data runs.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlnkit.envs.datasets.common import (
    MAX_PROBLEMS_PER_FILE,
    DatasetFormatError,
    _atomic_write_text,
    _json_type,
    _maybe_int,
)
from vlnkit.envs.street.graph import StreetGraph

StreetTask = Literal["touchdown", "map2seq"]
STREET_TASKS: tuple[str, ...] = ("touchdown", "map2seq")
OnInvalidRoute = Literal["error", "skip"]

NODE_COLUMNS: tuple[str, ...] = ("panoid", "pano_yaw_angle", "lat", "lng", "seen")
LINK_COLUMNS: tuple[str, ...] = ("start_panoid", "heading", "end_panoid")
SEEN_VALUES: dict[str, bool] = {"seen": True, "unseen": False}
CANONICAL_SPLITS: tuple[str, ...] = ("train", "dev", "test")


@dataclass(frozen=True)
class StreetEpisode:
    """One street navigation episode, independent of the release it came from.

    Attributes:
        episode_id: ``route_id`` (Touchdown) or ``id`` (Map2Seq), as a string.
        kind: which record layout it was read from, ``"touchdown"`` or ``"map2seq"``.
        instruction: the navigation text the agent follows.
        route: the gold route as panoids, start first, goal last.
        start_heading: heading at the start in degrees as stored (environments snap it to a link).
        end_heading: Touchdown's final heading (unnormalised) or ``None``.
        record: the full original record, kept so that writing it back loses nothing.
    """

    episode_id: str
    kind: StreetTask
    instruction: str
    route: tuple[str, ...]
    start_heading: float
    end_heading: float | None = None
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_record(self) -> dict[str, Any]:
        """The JSON record in the release format of ``kind`` (original extra fields preserved).

        A field of the original record that already holds the episode's value keeps its original
        JSON form (an integer heading stays an integer, a string id stays a string).
        """
        rec = dict(self.record)
        id_key = "route_id" if self.kind == "touchdown" else "id"
        if id_key not in rec or str(rec[id_key]) != self.episode_id:
            rec[id_key] = _maybe_int(self.episode_id)
        _set_if_changed(rec, "route_panoids", list(self.route))
        _set_if_changed(rec, "navigation_text", self.instruction)
        _set_if_changed(rec, "start_heading", self.start_heading)
        if self.kind == "touchdown" and self.end_heading is not None:
            _set_if_changed(rec, "end_heading", self.end_heading)
        return rec


def _set_if_changed(rec: dict[str, Any], key: str, value: Any) -> None:
    if key not in rec or rec[key] != value:
        rec[key] = value


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def write_graph(graph: StreetGraph, root: str | Path) -> None:
    """Write ``<root>/graph/nodes.txt`` and ``links.txt`` in the release format.

    Integer-valued yaw and headings are written without a decimal point, as in the real files; the
    ``seen|unseen`` column is written when the graph carries it.
    """
    gdir = Path(root) / "graph"
    rows = []
    for i, p in enumerate(graph.panoids):
        cols = [p, _fmt_number(graph.yaw[i]), f"{graph.lat[i]:.6f}", f"{graph.lng[i]:.6f}"]
        if graph.seen is not None:
            cols.append("seen" if graph.seen[i] else "unseen")
        rows.append(",".join(cols))
    _atomic_write_text(gdir / "nodes.txt", "\n".join(rows) + "\n")
    links = [
        f"{graph.panoids[s]},{_fmt_number(h)},{graph.panoids[d]}"
        for s, h, d in zip(graph.link_src.tolist(), graph.out_heading.tolist(), graph.out_dst.tolist())
    ]
    _atomic_write_text(gdir / "links.txt", "\n".join(links) + "\n")


def write_episodes(episodes: Iterable[StreetEpisode], path: str | Path) -> None:
    """Write episodes as JSON lines in their own release format (atomically)."""
    text = "".join(json.dumps(ep.to_record(), ensure_ascii=False) + "\n" for ep in episodes)
    _atomic_write_text(Path(path), text)


# --------------------------------------------------------------------------------------------------
# Street graph reader
# --------------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; a missing or undecodable file is a :class:`DatasetFormatError`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetFormatError(path, None, None, "file not found") from None
    except IsADirectoryError:
        raise DatasetFormatError(path, None, None, "expected a file, found a directory") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DatasetFormatError(path, line, None, f"not UTF-8 text ({exc.reason})") from None


def _content_text(path: Path) -> str:
    """The text of a file with ``\\n`` line ends and without trailing blank lines or whitespace.

    An empty file (nothing but whitespace) is a :class:`DatasetFormatError`.
    """
    text = _read_text(path)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    text = text.rstrip()
    if not text:
        raise DatasetFormatError(path, None, None, "empty file, expected one record per line")
    return text


def _split_columns(path: Path, text: str, names: Sequence[str], counts: Sequence[int]) -> list[list[str]]:
    """Split CSV text into columns, requiring every line to have the same allowed column count.

    ``names`` names the columns in order and ``counts`` lists the allowed counts; the first line
    decides which one the file uses. Returns one list of strings per column.
    """
    lines = text.split("\n")
    expected = lines[0].count(",") + 1
    if expected in counts and len(set(map(str.count, lines, repeat(",")))) == 1:
        fields = text.replace("\n", ",").split(",")
        return [fields[i::expected] for i in range(expected)]
    rows = [line.split(",") for line in lines]
    if expected not in counts:
        expected = min(counts, key=lambda c: abs(c - len(rows[0])))
        bad = 0
    else:
        bad = next(i for i, row in enumerate(rows) if len(row) != expected)
    got = len(rows[bad])
    column_names = ",".join(names[:expected])
    if got < expected:
        raise DatasetFormatError(
            path, bad + 1, names[got], f"missing column: expected {expected} columns ({column_names}), got {got}"
        )
    raise DatasetFormatError(
        path,
        bad + 1,
        f"column {expected + 1}",
        f"extra column {rows[bad][expected]!r}: expected {expected} columns ({column_names}), got {got}",
    )


def _parse_floats(
    path: Path, values: Sequence[str], name: str, low: float = -math.inf, high: float = math.inf
) -> np.ndarray:
    """Parse a column of decimal numbers, requiring each to be finite and within ``[low, high]``."""
    try:
        array = np.array(list(map(float, values)), dtype=np.float64)
    except ValueError:
        array = None
    if array is not None:
        bad = ~np.isfinite(array) | (array < low) | (array > high)
        if not bad.any():
            return array
        first = int(np.argmax(bad))
    else:
        first = next(i for i, v in enumerate(values) if not _is_float(v))
    value = values[first]
    if not _is_float(value) or not math.isfinite(float(value)):
        expected = "a finite number"
    else:
        expected = f"a number within [{low:g}, {high:g}]"
    raise DatasetFormatError(path, first + 1, name, f"expected {expected}, got {value!r}")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _graph_dir(root: Path) -> Path:
    """The folder holding ``nodes.txt`` and ``links.txt`` for a release folder or the graph folder."""
    if (root / "graph").is_dir() or not (root / "nodes.txt").exists():
        return root / "graph"
    return root


def read_graph(root: str | Path) -> StreetGraph:
    """Read and validate a street graph in the release format.

    ``root`` is a release folder holding ``graph/`` or the graph folder itself. ``nodes.txt`` has the
    columns ``panoid,pano_yaw_angle,lat,lng`` and optionally ``seen|unseen`` (the same count on every
    line); ``links.txt`` has ``start_panoid,heading,end_panoid``. Any departure from the format (column
    counts, non-finite or out-of-range numbers, duplicate nodes or links, links to unknown nodes, empty
    or missing files) raises :class:`DatasetFormatError` naming the file, line and column.
    """
    gdir = _graph_dir(Path(root))
    nodes_path, links_path = gdir / "nodes.txt", gdir / "links.txt"

    node_cols = _split_columns(nodes_path, _content_text(nodes_path), NODE_COLUMNS, (4, 5))
    panoids = node_cols[0]
    yaw = _parse_floats(nodes_path, node_cols[1], "pano_yaw_angle")
    lat = _parse_floats(nodes_path, node_cols[2], "lat", -90.0, 90.0)
    lng = _parse_floats(nodes_path, node_cols[3], "lng", -180.0, 180.0)
    seen = _parse_seen(nodes_path, node_cols[4]) if len(node_cols) == 5 else None
    index = dict(zip(panoids, range(len(panoids))))
    if len(index) != len(panoids) or "" in index:
        raise _bad_panoid_error(nodes_path, panoids)

    link_text = _content_text(links_path)
    src_names, heading_text, dst_names = _split_columns(links_path, link_text, LINK_COLUMNS, (3,))
    try:
        src = np.array(list(map(index.__getitem__, src_names)), dtype=np.int64)
        dst = np.array(list(map(index.__getitem__, dst_names)), dtype=np.int64)
    except KeyError:
        raise _unknown_endpoint_error(links_path, nodes_path, index, src_names, dst_names) from None
    heading = _parse_floats(links_path, heading_text, "heading")
    keys = src * len(panoids) + dst
    if np.unique(keys).size != keys.size:
        raise _duplicate_link_error(links_path, keys)
    return StreetGraph.from_arrays(panoids, yaw, lat, lng, seen, src, dst, heading)


def _parse_seen(path: Path, values: Sequence[str]) -> np.ndarray:
    """Parse the VELMA ``seen|unseen`` column into booleans."""
    try:
        return np.array(list(map(SEEN_VALUES.__getitem__, values)), dtype=bool)
    except KeyError:
        first = next(i for i, v in enumerate(values) if v not in SEEN_VALUES)
        message = f"expected 'seen' or 'unseen', got {values[first]!r}"
        raise DatasetFormatError(path, first + 1, "seen", message) from None


def _bad_panoid_error(path: Path, panoids: Sequence[str]) -> DatasetFormatError:
    """The error for the first empty or repeated panoid of ``nodes.txt`` (one must exist)."""
    first_line: dict[str, int] = {}
    for line, panoid in enumerate(panoids, start=1):
        if not panoid:
            return DatasetFormatError(path, line, "panoid", "expected a panorama id, got an empty string")
        if panoid in first_line:
            return DatasetFormatError(
                path, line, "panoid", f"duplicate node {panoid!r}, already defined on line {first_line[panoid]}"
            )
        first_line[panoid] = line
    raise AssertionError("no empty or repeated panoid")


def _unknown_endpoint_error(
    path: Path, nodes_path: Path, index: dict[str, int], src_names: Sequence[str], dst_names: Sequence[str]
) -> DatasetFormatError:
    """The error for the first link whose start or end panoid is not a node (one must exist)."""
    for line, (src, dst) in enumerate(zip(src_names, dst_names), start=1):
        for name, panoid in (("start_panoid", src), ("end_panoid", dst)):
            if panoid not in index:
                return DatasetFormatError(path, line, name, f"panoid {panoid!r} is not a node of {nodes_path}")
    raise AssertionError("no unknown link endpoint")


def _duplicate_link_error(path: Path, keys: np.ndarray) -> DatasetFormatError:
    """The error for the first link repeating an earlier link's start and end panoids (one must exist)."""
    first_line: dict[int, int] = {}
    for line, key in enumerate(keys.tolist(), start=1):
        if key in first_line:
            return DatasetFormatError(
                path, line, "end_panoid", f"duplicate link, the same start and end panoids as line {first_line[key]}"
            )
        first_line[key] = line
    raise AssertionError("no duplicate link")


# --------------------------------------------------------------------------------------------------
# Episode reader
# --------------------------------------------------------------------------------------------------


@dataclass
class EpisodeReadResult:
    """What :func:`read_episodes` read from one JSON-lines file.

    Attributes:
        episodes: the valid episodes in file order.
        skipped: ``(line, reason)`` for each episode left out because its route is not valid in the
            graph (only with ``on_invalid_route="skip"``).
    """

    episodes: list[StreetEpisode]
    skipped: list[tuple[int, str]] = field(default_factory=list)


def read_episodes(
    path: str | Path,
    graph: StreetGraph | None = None,
    task: StreetTask | None = None,
    on_invalid_route: OnInvalidRoute = "error",
) -> EpisodeReadResult:
    """Read and validate a street episode file (JSON lines, one Touchdown or Map2Seq record a line).

    The layout of each record is decided by its fields: a ``route_id`` makes it a Touchdown record, an
    ``id`` a Map2Seq record, so mixed files read as they are. ``task`` restricts the accepted kind.
    With a ``graph`` every route panoid must be a node and every consecutive pair a directed link
    ``route[i] -> route[i+1]``; an episode breaking this raises, or with ``on_invalid_route="skip"`` is
    left out, listed in ``skipped`` and summarised by one warning. Malformed lines always raise
    :class:`DatasetFormatError`.
    """
    _check_options(task, on_invalid_route)
    result, _ = _parse_episodes(Path(path), graph, task, on_invalid_route, collect=False)
    if result.skipped:
        first_line, first_reason = result.skipped[0]
        warnings.warn(
            f"{path}: skipped {len(result.skipped)} of {len(result.skipped) + len(result.episodes)} episodes "
            f"whose route is not valid in the graph (first, line {first_line}: {first_reason})",
            stacklevel=2,
        )
    return result


def _check_options(task: str | None, on_invalid_route: str) -> None:
    if task is not None and task not in STREET_TASKS:
        raise ValueError(f"unknown street task {task!r}, expected one of {', '.join(STREET_TASKS)} or None")
    if on_invalid_route not in ("error", "skip"):
        raise ValueError(f"on_invalid_route must be 'error' or 'skip', got {on_invalid_route!r}")


def _parse_episodes(
    path: Path, graph: StreetGraph | None, task: str | None, on_invalid_route: str, collect: bool
) -> tuple[EpisodeReadResult, list[DatasetFormatError]]:
    """Parse an episode file; with ``collect`` line errors are gathered instead of raised.

    File-level errors (missing, empty, not UTF-8) always raise.
    """
    lines = _content_text(path).split("\n")
    link_keys = _link_keys(graph) if graph is not None else None
    result = EpisodeReadResult(episodes=[])
    errors: list[DatasetFormatError] = []
    first_use: dict[str, tuple[int, str]] = {}
    for line, text in enumerate(lines, start=1):
        try:
            episode = _parse_episode_line(path, line, text, task)
            if episode.episode_id in first_use:
                raise _duplicate_id_error(path, line, episode, *first_use[episode.episode_id])
            first_use[episode.episode_id] = (line, episode.kind)
            route_error = None if graph is None else _route_error(path, line, episode.route, graph, link_keys)
            if route_error is not None and on_invalid_route == "error":
                raise route_error
        except DatasetFormatError as err:
            if not collect:
                raise
            errors.append(err)
            continue
        if route_error is not None:
            result.skipped.append((line, f"field '{route_error.field}': {route_error.message}"))
        else:
            result.episodes.append(episode)
    return result, errors


def _duplicate_id_error(path: Path, line: int, episode: StreetEpisode, first_line: int,
                        first_kind: str) -> DatasetFormatError:
    """The error for ``episode`` on ``line`` reusing the id of the earlier record on ``first_line``.

    Touchdown's ``route_id`` and Map2Seq's ``id`` share one namespace: results and submissions are keyed
    by the episode id, so a repeat would drop one episode and run the other twice.
    """
    return DatasetFormatError(
        path, line, _ID_KEYS[episode.kind],
        f"duplicate episode id {episode.episode_id!r}, already used by the {_KIND_NAMES[first_kind]} "
        f"'{_ID_KEYS[first_kind]}' on line {first_line} (episode ids must be unique across Touchdown "
        "route_id and Map2Seq id)",
    )


def _link_keys(graph: StreetGraph) -> set[int]:
    """The directed links of ``graph`` as integers ``src * num_nodes + dst``."""
    keys = graph.link_src.astype(np.int64) * graph.num_nodes + graph.out_dst
    return set(keys.tolist())


def _route_error(
    path: Path, line: int, route: Sequence[str], graph: StreetGraph, link_keys: set[int]
) -> DatasetFormatError | None:
    """The first way ``route`` is not a walk along directed links of ``graph``, or ``None``."""
    nodes = []
    for i, panoid in enumerate(route):
        node = graph.index.get(panoid)
        if node is None:
            message = f"panoid {panoid!r} is not a node of the graph"
            return DatasetFormatError(path, line, f"route_panoids[{i}]", message)
        nodes.append(node)
    for i in range(len(nodes) - 1):
        if nodes[i] * graph.num_nodes + nodes[i + 1] not in link_keys:
            return DatasetFormatError(
                path,
                line,
                f"route_panoids[{i}]",
                f"no link from {route[i]!r} to the next route panoid {route[i + 1]!r}",
            )
    return None


_KIND_NAMES = {"touchdown": "Touchdown", "map2seq": "Map2Seq"}
_ID_KEYS = {"touchdown": "route_id", "map2seq": "id"}


def _parse_episode_line(path: Path, line: int, text: str, task: str | None) -> StreetEpisode:
    """Parse and type-check one JSON-lines record into a :class:`StreetEpisode`."""
    if not text.strip():
        raise DatasetFormatError(path, line, None, "blank line, expected one JSON record per line")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(path, line, None, f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(record, dict):
        raise DatasetFormatError(path, line, None, f"expected a JSON object, got {type(record).__name__}")
    if "route_id" in record:
        kind, id_key = "touchdown", "route_id"
    elif "id" in record:
        kind, id_key = "map2seq", "id"
    else:
        raise DatasetFormatError(
            path, line, "route_id", "missing: a Touchdown record needs 'route_id', a Map2Seq record 'id'"
        )
    if task is not None and kind != task:
        raise DatasetFormatError(
            path, line, id_key, f"a {_KIND_NAMES[kind]} record (it has '{id_key}') where task {task!r} was asked for"
        )

    def require(key: str) -> Any:
        if key not in record:
            raise DatasetFormatError(path, line, key, f"missing, required in a {_KIND_NAMES[kind]} record")
        return record[key]

    episode_id = require(id_key)
    if isinstance(episode_id, bool) or not isinstance(episode_id, int | str):
        raise DatasetFormatError(path, line, id_key, f"expected an integer or a string, got {episode_id!r}")
    instruction = require("navigation_text")
    if not isinstance(instruction, str):
        raise DatasetFormatError(path, line, "navigation_text", f"expected a string, got {_json_type(instruction)}")
    route = require("route_panoids")
    if not isinstance(route, list) or not route:
        raise DatasetFormatError(path, line, "route_panoids", f"expected a non-empty list of panoids, got {route!r}")
    for i, panoid in enumerate(route):
        if not isinstance(panoid, str) or not panoid:
            raise DatasetFormatError(path, line, f"route_panoids[{i}]", f"expected a panoid string, got {panoid!r}")
    start_heading = _number(path, line, "start_heading", require("start_heading"))
    end_heading = record.get("end_heading") if kind == "touchdown" else None
    if end_heading is not None:
        end_heading = _number(path, line, "end_heading", end_heading)
    return StreetEpisode(
        episode_id=str(episode_id),
        kind=kind,
        instruction=instruction,
        route=tuple(route),
        start_heading=start_heading,
        end_heading=end_heading,
        record=record,
    )


def _number(path: Path, line: int, key: str, value: Any) -> float:
    """``value`` as a float when it is a finite JSON number (booleans excluded)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DatasetFormatError(path, line, key, f"expected a finite number in degrees, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------------
# Release folders
# --------------------------------------------------------------------------------------------------


def street_split_path(root: str | Path, split: str) -> Path:
    """The episode file of ``split`` in a street release folder: ``<root>/data/<split>.json``."""
    return Path(root) / "data" / f"{split}.json"


def list_street_splits(root: str | Path) -> list[str]:
    """The splits present in ``<root>/data``: train, dev and test first (when present), then the rest
    sorted by name."""
    data_dir = Path(root) / "data"
    if not data_dir.is_dir():
        return []
    names = {p.stem for p in data_dir.glob("*.json") if p.is_file()}
    canonical = [s for s in CANONICAL_SPLITS if s in names]
    return canonical + sorted(names - set(canonical))


def load_street_split(
    root: str | Path, split: str, task: StreetTask | None = None, on_invalid_route: OnInvalidRoute = "error"
) -> tuple[StreetGraph, EpisodeReadResult]:
    """Read the graph of a street release folder and the episodes of one split, checked against it."""
    _check_options(task, on_invalid_route)
    path = street_split_path(root, split)
    if not path.is_file():
        present = ", ".join(list_street_splits(root)) or "none"
        raise DatasetFormatError(path, None, None, f"split {split!r} not found (splits present: {present})")
    graph = read_graph(root)
    return graph, read_episodes(path, graph, task, on_invalid_route)


def check_street_release(
    task: StreetTask | None, data_dir: str | Path, on_invalid_route: OnInvalidRoute = "error"
) -> dict[str, Any]:
    """Validate a whole street release folder as ``vlnkit eval`` reads it, and summarise it as JSON-able data.

    Every split is read by the same reader the environment loads it with (:func:`read_graph`, then the
    episode parser of :func:`read_episodes` with no kind restriction, so VELMA's mixed files pass), but
    problems are collected rather than raised: a graph that cannot be read is one problem (its
    ``nodes``/``links`` are then ``None`` and episodes are checked without it), and every malformed
    episode line of every split is another, up to ``MAX_PROBLEMS_PER_FILE`` per file plus a count of
    the rest. Routes invalid in the graph are problems, or with ``on_invalid_route="skip"`` are counted
    under ``skipped`` as a loader in that mode would leave them out. ``episodes`` counts the records of
    ``task``'s layout per split (all records when ``task`` is ``None``), those eval runs by default
    (``task.episode_kinds=task``); ``other_kinds`` counts the valid records of the other layout, run
    only with ``task.episode_kinds=all``. A split left with no episode to evaluate is a problem too.
    ``ok`` is true when there is no problem.
    """
    _check_options(task, on_invalid_route)
    root = Path(data_dir)
    problems: list[str] = []
    summary: dict[str, Any] = {
        "task": task,
        "data_dir": str(root),
        "nodes": None,
        "links": None,
        "episodes": {},
        "other_kinds": {},
        "skipped": {},
        "problems": problems,
        "ok": False,
    }
    graph: StreetGraph | None = None
    try:
        graph = read_graph(root)
        summary["nodes"], summary["links"] = graph.num_nodes, graph.num_links
    except DatasetFormatError as err:
        problems.append(str(err))
    splits = list_street_splits(root)
    if not splits:
        problems.append(f"{root / 'data'}: no <split>.json episode files found")
    for split in splits:
        path = street_split_path(root, split)
        try:
            result, errors = _parse_episodes(path, graph, None, on_invalid_route, collect=True)
        except DatasetFormatError as err:
            problems.append(str(err))
            continue
        kept = sum(1 for ep in result.episodes if task is None or ep.kind == task)
        summary["episodes"][split] = kept
        summary["other_kinds"][split] = len(result.episodes) - kept
        summary["skipped"][split] = len(result.skipped)
        problems.extend(str(err) for err in errors[:MAX_PROBLEMS_PER_FILE])
        if len(errors) > MAX_PROBLEMS_PER_FILE:
            problems.append(f"{path}: {len(errors) - MAX_PROBLEMS_PER_FILE} more malformed lines not listed")
        if not kept and not errors:
            kind = "" if task is None else f"{_KIND_NAMES[task]} "
            problems.append(f"{path}: no {kind}episodes to evaluate ({len(result.episodes)} records of the other "
                            f"layout, {len(result.skipped)} skipped for invalid routes)")
    summary["ok"] = not problems
    return summary


def write_submission(episodes: Sequence[StreetEpisode], routes: Sequence[Sequence[str]], path: str | Path) -> None:
    """Write a street leaderboard submission: JSON lines with the episode's id field (``route_id`` for
    Touchdown records, ``id`` for Map2Seq) and the predicted ``route_panoids`` (atomically)."""
    if len(episodes) != len(routes):
        raise ValueError(f"{len(episodes)} episodes but {len(routes)} predicted routes")
    lines = []
    for ep, route in zip(episodes, routes):
        key = "route_id" if ep.kind == "touchdown" else "id"
        lines.append(json.dumps({key: ep.to_record()[key], "route_panoids": list(route)}) + "\n")
    _atomic_write_text(Path(path), "".join(lines))

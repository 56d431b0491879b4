"""Readers and writers for the real public dataset formats (see ``shared/docs/datasets.md``).

Street tasks (Touchdown, Map2Seq, VELMA/FLAME copies) use a release folder
``<root>/graph/{nodes.txt,links.txt}`` and ``<root>/data/<split>.json`` (JSON lines, one route per line).
The synthetic generators write the same files through the writers here, so every code path is the one a
user with real data runs.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlnkit.envs.street.graph import StreetGraph

StreetTask = Literal["touchdown", "map2seq"]
STREET_TASKS: tuple[str, ...] = ("touchdown", "map2seq")
OnInvalidRoute = Literal["error", "skip"]

NODE_COLUMNS: tuple[str, ...] = ("panoid", "pano_yaw_angle", "lat", "lng", "seen")
LINK_COLUMNS: tuple[str, ...] = ("start_panoid", "heading", "end_panoid")
SEEN_VALUES: dict[str, bool] = {"seen": True, "unseen": False}
CANONICAL_SPLITS: tuple[str, ...] = ("train", "dev", "test")
MAX_PROBLEMS_PER_FILE = 20


class DatasetFormatError(ValueError):
    """A dataset file that does not follow its release format.

    Attributes:
        path: the offending file.
        line: 1-based line number, or ``None`` when the problem concerns the whole file.
        field: the column or record field at fault (``route_panoids[3]``), or ``None``.
        message: what is wrong and what was expected.
    """

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path) if self.line is None else f"{self.path}:{self.line}"
        what = "" if self.field is None else f" field '{self.field}':"
        return f"{where}:{what} {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.line, self.field, self.message))


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


def _maybe_int(value: str) -> int | str:
    """``value`` as an int when it is the canonical spelling of one (``"12"``, not ``"012"``)."""
    try:
        number = int(value)
    except ValueError:
        return value
    return number if str(number) == value else value


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


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


# --------------------------------------------------------------------------------------------------
# VLN-CE (R2R-CE, RxR-CE): gzipped JSON splits, ground truth, scenes, submissions
# --------------------------------------------------------------------------------------------------
#
# Layout of a release: ``<root>/<split>/<split><suffix>.json.gz`` and, where present,
# ``<root>/<split>/<split><suffix>_gt.json.gz`` (``suffix`` is empty for R2R-CE, ``_guide`` for RxR-CE).
# Scenes live under a separate root as ``<scenes root>/<scene_id>`` (``mp3d/<scan>/<scan>.glb``).

VLNCE_SPLITS: tuple[str, ...] = ("train", "val_seen", "val_unseen", "test")
QUATERNION_NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class VLNCEEpisode:
    """One VLN-CE episode, in Habitat's coordinates (y up, rotations ``[x, y, z, w]``).

    Attributes:
        episode_id: the record's ``episode_id`` as a string.
        trajectory_id: ``trajectory_id`` as a string, or ``None`` (RxR-CE records may lack it).
        scene_id: the scene path relative to the scenes root (``mp3d/<scan>/<scan>.glb``).
        start_position, start_rotation: where and how the agent starts.
        instruction: ``instruction.instruction_text``.
        instruction_tokens: ``instruction.instruction_tokens`` (zero-padded ids), or ``None``.
        goals: ``(position, radius)`` per goal; empty in test splits.
        reference_path: the reference path's points, or ``None`` (test splits).
        geodesic_distance: ``info.geodesic_distance``, or ``None``.
        instruction_id: RxR-CE's ``instruction.instruction_id`` (as a string), or ``None``.
        language: RxR-CE's ``instruction.language``, or ``None``.
        record: the full original record, written back unchanged by :meth:`to_record`.
    """

    episode_id: str
    trajectory_id: str | None
    scene_id: str
    start_position: tuple[float, float, float]
    start_rotation: tuple[float, float, float, float]
    instruction: str
    instruction_tokens: tuple[int, ...] | None = None
    goals: tuple[tuple[tuple[float, float, float], float | None], ...] = ()
    reference_path: tuple[tuple[float, float, float], ...] | None = None
    geodesic_distance: float | None = None
    instruction_id: str | None = None
    language: str | None = None
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def goal_positions(self) -> list[tuple[float, float, float]]:
        """The goal positions (empty in test splits)."""
        return [position for position, _ in self.goals]

    def to_record(self) -> dict[str, Any]:
        """The JSON record in the release format; fields of the original record are kept as they were."""
        if self.record:
            return dict(self.record)
        rec: dict[str, Any] = {
            "episode_id": _maybe_int(self.episode_id),
            "trajectory_id": None if self.trajectory_id is None else _maybe_int(self.trajectory_id),
            "scene_id": self.scene_id,
            "start_position": list(self.start_position),
            "start_rotation": list(self.start_rotation),
        }
        if self.geodesic_distance is not None:
            rec["info"] = {"geodesic_distance": self.geodesic_distance}
        if self.goals:
            rec["goals"] = [{"position": list(p), "radius": r} for p, r in self.goals]
        instruction: dict[str, Any] = {"instruction_text": self.instruction}
        if self.instruction_tokens is not None:
            instruction["instruction_tokens"] = list(self.instruction_tokens)
        if self.instruction_id is not None:
            instruction["instruction_id"] = _maybe_int(self.instruction_id)
        if self.language is not None:
            instruction["language"] = self.language
        rec["instruction"] = instruction
        if self.reference_path is not None:
            rec["reference_path"] = [list(p) for p in self.reference_path]
        return rec


@dataclass
class VLNCESplit:
    """The contents of one ``{split}.json.gz``: episodes in file order and the ``instruction_vocab``
    (``None`` when the file has none, as in RxR-CE)."""

    episodes: list[VLNCEEpisode]
    vocab: dict[str, Any] | None = None


@dataclass(frozen=True)
class VLNCEGroundTruth:
    """One episode's entry of ``{split}_gt.json.gz``: the shortest-path follower's ``locations`` (start,
    then one point per forward step), its ``actions`` (ending with STOP) and ``forward_steps``."""

    locations: tuple[tuple[float, float, float], ...]
    actions: tuple[int, ...]
    forward_steps: int

    def to_record(self) -> dict[str, Any]:
        """The JSON value stored under the episode id."""
        return {"locations": [list(p) for p in self.locations], "actions": list(self.actions),
                "forward_steps": self.forward_steps}


def vlnce_split_path(root: str | Path, split: str, suffix: str = "") -> Path:
    """``<root>/<split>/<split><suffix>.json.gz``."""
    return Path(root) / split / f"{split}{suffix}.json.gz"


def vlnce_gt_path(root: str | Path, split: str, suffix: str = "") -> Path:
    """``<root>/<split>/<split><suffix>_gt.json.gz``."""
    return Path(root) / split / f"{split}{suffix}_gt.json.gz"


def list_vlnce_splits(root: str | Path, suffix: str = "") -> list[str]:
    """Splits present in a VLN-CE release folder (folders holding ``<name>/<name><suffix>.json.gz``):
    train, val_seen, val_unseen and test first, then the rest by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    names = {p.name for p in root.iterdir() if p.is_dir() and vlnce_split_path(root, p.name, suffix).is_file()}
    canonical = [s for s in VLNCE_SPLITS if s in names]
    return canonical + sorted(names - set(canonical))


def _read_json_gz(path: Path) -> Any:
    """Parse a gzipped JSON file; missing, non-gzip or invalid JSON files raise :class:`DatasetFormatError`."""
    import gzip
    import zlib

    try:
        raw = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise DatasetFormatError(path, None, None, "file not found") from None
    except IsADirectoryError:
        raise DatasetFormatError(path, None, None, "expected a file, found a directory") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetFormatError(path, None, None, f"not a gzip file ({err})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(path, None, None, f"not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(path, exc.lineno, None, f"invalid JSON: {exc.msg} at column {exc.colno}") from None


def _write_json_gz(path: Path, data: Any) -> None:
    """Write gzipped JSON atomically; the bytes depend only on ``data`` (no timestamp, no file name)."""
    import gzip
    import io

    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
        gz.write(json.dumps(data, ensure_ascii=False, separators=(", ", ": ")).encode("utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


class _EpisodeChecker:
    """Type checks of one episode record, with errors naming the file, the episode and the field."""

    def __init__(self, path: Path, index: int, record: dict[str, Any]) -> None:
        self.path, self.index, self.record = path, index, record
        eid = record.get("episode_id")
        self.label = f"episode {eid!r}" if eid is not None else f"episode at index {index}"

    def error(self, name: str, message: str) -> DatasetFormatError:
        return DatasetFormatError(self.path, None, f"episodes[{self.index}].{name}", f"{self.label}: {message}")

    def require(self, container: dict[str, Any], key: str, name: str) -> Any:
        if key not in container:
            raise self.error(name, "missing")
        return container[key]

    def identifier(self, value: Any, name: str) -> str:
        if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
            raise self.error(name, f"expected an integer or a non-empty string, got {value!r}")
        return str(value)

    def number(self, value: Any, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.error(name, f"expected a finite number, got {value!r}")
        return float(value)

    def vector(self, value: Any, size: int, name: str) -> tuple[float, ...]:
        if not isinstance(value, list) or len(value) != size:
            raise self.error(name, f"expected a list of {size} numbers, got {value!r}")
        return tuple(self.number(v, f"{name}[{i}]") for i, v in enumerate(value))


def _parse_vlnce_episode(path: Path, index: int, record: Any, require_goals: bool) -> VLNCEEpisode:
    """Validate one record of a ``{split}.json.gz`` and turn it into a :class:`VLNCEEpisode`."""
    if not isinstance(record, dict):
        raise DatasetFormatError(path, None, f"episodes[{index}]", f"expected a JSON object, got {_json_type(record)}")
    c = _EpisodeChecker(path, index, record)
    episode_id = c.identifier(c.require(record, "episode_id", "episode_id"), "episode_id")
    trajectory = record.get("trajectory_id")
    trajectory_id = None if trajectory is None else c.identifier(trajectory, "trajectory_id")
    scene_id = c.require(record, "scene_id", "scene_id")
    if not isinstance(scene_id, str) or not scene_id:
        raise c.error("scene_id", f"expected a scene path such as 'mp3d/<scan>/<scan>.glb', got {scene_id!r}")
    start_position = c.vector(c.require(record, "start_position", "start_position"), 3, "start_position")
    start_rotation = c.vector(c.require(record, "start_rotation", "start_rotation"), 4, "start_rotation")
    norm = math.sqrt(sum(v * v for v in start_rotation))
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise c.error("start_rotation", f"expected a unit quaternion [x, y, z, w], got norm {norm:.6f}")
    instruction = c.require(record, "instruction", "instruction")
    if not isinstance(instruction, dict):
        raise c.error("instruction", f"expected an object with 'instruction_text', got {_json_type(instruction)}")
    text = c.require(instruction, "instruction_text", "instruction.instruction_text")
    if not isinstance(text, str):
        raise c.error("instruction.instruction_text", f"expected a string, got {_json_type(text)}")
    tokens = instruction.get("instruction_tokens")
    if tokens is not None:
        if not isinstance(tokens, list) or any(isinstance(t, bool) or not isinstance(t, int) for t in tokens):
            raise c.error("instruction.instruction_tokens", "expected a list of integer token ids")
        tokens = tuple(tokens)
    instruction_id = instruction.get("instruction_id")
    if instruction_id is not None:
        instruction_id = c.identifier(instruction_id, "instruction.instruction_id")
    language = instruction.get("language")
    if language is not None and not isinstance(language, str):
        raise c.error("instruction.language", f"expected a string, got {_json_type(language)}")

    goals: list[tuple[tuple[float, float, float], float | None]] = []
    if "goals" in record or require_goals:
        raw_goals = c.require(record, "goals", "goals")
        if not isinstance(raw_goals, list) or not raw_goals:
            raise c.error("goals", f"expected a non-empty list of goals, got {raw_goals!r}")
        for g, goal in enumerate(raw_goals):
            if not isinstance(goal, dict):
                raise c.error(f"goals[{g}]", f"expected an object with 'position', got {_json_type(goal)}")
            position = c.vector(c.require(goal, "position", f"goals[{g}].position"), 3, f"goals[{g}].position")
            radius = goal.get("radius")
            goals.append((position, None if radius is None else c.number(radius, f"goals[{g}].radius")))  # type: ignore[arg-type]
    reference = record.get("reference_path")
    reference_path = None
    if reference is not None:
        if not isinstance(reference, list) or not reference:
            raise c.error("reference_path", f"expected a non-empty list of [x, y, z] points, got {reference!r}")
        reference_path = tuple(c.vector(p, 3, f"reference_path[{i}]") for i, p in enumerate(reference))
    geodesic = None
    info = record.get("info")
    if info is not None:
        if not isinstance(info, dict):
            raise c.error("info", f"expected an object, got {_json_type(info)}")
        if info.get("geodesic_distance") is not None:
            geodesic = c.number(info["geodesic_distance"], "info.geodesic_distance")
    return VLNCEEpisode(
        episode_id=episode_id,
        trajectory_id=trajectory_id,
        scene_id=scene_id,
        start_position=start_position,  # type: ignore[arg-type]
        start_rotation=start_rotation,  # type: ignore[arg-type]
        instruction=text,
        instruction_tokens=tokens,
        goals=tuple(goals),
        reference_path=reference_path,  # type: ignore[arg-type]
        geodesic_distance=geodesic,
        instruction_id=instruction_id,
        language=language,
        record=record,
    )


def _parse_vlnce_split(path: Path, require_vocab: bool, require_goals: bool,
                       collect: bool) -> tuple[VLNCESplit, list[DatasetFormatError]]:
    """Parse a split file; with ``collect`` episode errors are gathered instead of raised (file-level
    errors always raise)."""
    data = _read_json_gz(path)
    if not isinstance(data, dict):
        raise DatasetFormatError(path, None, None, f"expected a JSON object with 'episodes', got {_json_type(data)}")
    episodes = data.get("episodes")
    if not isinstance(episodes, list):
        raise DatasetFormatError(path, None, "episodes", "missing or not a list")
    vocab = data.get("instruction_vocab")
    if vocab is None and require_vocab:
        raise DatasetFormatError(path, None, "instruction_vocab", "missing (the R2R-CE loader requires it)")
    if vocab is not None and not (isinstance(vocab, dict) and isinstance(vocab.get("word_list"), list)):
        raise DatasetFormatError(path, None, "instruction_vocab.word_list", "expected an object with a 'word_list' list")
    result = VLNCESplit(episodes=[], vocab=vocab)
    errors: list[DatasetFormatError] = []
    seen: dict[str, int] = {}
    for index, record in enumerate(episodes):
        try:
            episode = _parse_vlnce_episode(path, index, record, require_goals)
            if episode.episode_id in seen:
                raise DatasetFormatError(path, None, f"episodes[{index}].episode_id",
                                         f"duplicate episode id {episode.episode_id!r}, already at index {seen[episode.episode_id]}")
        except DatasetFormatError as err:
            if not collect:
                raise
            errors.append(err)
            continue
        seen[episode.episode_id] = index
        result.episodes.append(episode)
    return result, errors


def read_vlnce_split(path: str | Path, require_vocab: bool = True, require_goals: bool | None = None) -> VLNCESplit:
    """Read and validate a ``{split}.json.gz`` file (R2R-CE or RxR-CE).

    Every episode needs ``episode_id``, ``scene_id``, ``start_position`` (3 numbers), ``start_rotation``
    (a unit quaternion ``[x, y, z, w]``) and ``instruction.instruction_text``; ``goals`` too unless
    ``require_goals`` is false (by default it is required except in splits whose file name starts with
    ``test``, which the releases publish without goals, reference paths or info). The top-level
    ``instruction_vocab`` is required with ``require_vocab`` (R2R-CE). Problems raise
    :class:`DatasetFormatError` naming the file, the episode and the field.
    """
    path = Path(path)
    if require_goals is None:
        require_goals = not path.name.startswith("test")
    return _parse_vlnce_split(path, require_vocab, require_goals, collect=False)[0]


def read_vlnce_gt(path: str | Path) -> dict[str, VLNCEGroundTruth]:
    """Read and validate a ``{split}_gt.json.gz`` file: ``{episode_id: {locations, actions, forward_steps}}``."""
    path = Path(path)
    data = _read_json_gz(path)
    if not isinstance(data, dict):
        raise DatasetFormatError(path, None, None, f"expected a JSON object keyed by episode id, got {_json_type(data)}")
    out: dict[str, VLNCEGroundTruth] = {}
    for key, entry in data.items():
        where = f"{key}"
        if not isinstance(entry, dict):
            raise DatasetFormatError(path, None, where, f"episode {key!r}: expected an object, got {_json_type(entry)}")
        locations = entry.get("locations")
        if not isinstance(locations, list) or not locations:
            raise DatasetFormatError(path, None, f"{where}.locations", f"episode {key!r}: expected a non-empty list of [x, y, z] points")
        points = []
        for i, p in enumerate(locations):
            if (not isinstance(p, list) or len(p) != 3
                    or any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in p)):
                raise DatasetFormatError(path, None, f"{where}.locations[{i}]", f"episode {key!r}: expected [x, y, z], got {p!r}")
            points.append(tuple(float(v) for v in p))
        actions = entry.get("actions", [])
        if not isinstance(actions, list) or any(isinstance(a, bool) or not isinstance(a, int) for a in actions):
            raise DatasetFormatError(path, None, f"{where}.actions", f"episode {key!r}: expected a list of integer actions")
        forward = entry.get("forward_steps", sum(1 for a in actions if a == 1))
        if isinstance(forward, bool) or not isinstance(forward, int) or forward < 0:
            raise DatasetFormatError(path, None, f"{where}.forward_steps", f"episode {key!r}: expected a non-negative integer, got {forward!r}")
        out[str(key)] = VLNCEGroundTruth(tuple(points), tuple(actions), forward)  # type: ignore[arg-type]
    return out


def write_vlnce_split(episodes: Iterable[VLNCEEpisode], path: str | Path, vocab: dict[str, Any] | None = None) -> None:
    """Write ``{"episodes": [...], "instruction_vocab": vocab}`` as gzipped JSON (same input, same bytes).
    ``vocab`` is left out when ``None`` (RxR-CE)."""
    data: dict[str, Any] = {"episodes": [ep.to_record() for ep in episodes]}
    if vocab is not None:
        data["instruction_vocab"] = vocab
    _write_json_gz(Path(path), data)


def write_vlnce_gt(ground_truth: dict[str, VLNCEGroundTruth], path: str | Path) -> None:
    """Write a ``{split}_gt.json.gz`` file (same input, same bytes)."""
    _write_json_gz(Path(path), {key: gt.to_record() for key, gt in ground_truth.items()})


def default_scenes_dir(data_dir: Path) -> Path:
    """Where scenes are looked for when no scenes root is given: ``<data_dir>/scenes`` (the layout of the
    synthetic houses), else ``data_dir`` itself."""
    return data_dir / "scenes" if (data_dir / "scenes").is_dir() else data_dir


def resolve_scene_path(scenes_dir: str | Path, scene_id: str) -> Path:
    """The file of ``scene_id`` under the scenes root; the file need not exist.

    Containment is decided on the path as written, normalised lexically (``os.path.normpath``) without
    following symbolic links, so a link made inside the root (habitat's usual ``mp3d -> /big/disk/mp3d``)
    is followed as the user meant. A ``scene_id`` that is absolute or climbs out of the root with ``..``
    raises ``ValueError``.
    """
    root = Path(os.path.normpath(os.path.abspath(scenes_dir)))
    if Path(scene_id).is_absolute():
        raise ValueError(f"scene_id {scene_id!r} is an absolute path; expected a path under the scenes root {root}")
    target = Path(os.path.normpath(root / scene_id))
    if not target.is_relative_to(root):
        raise ValueError(f"scene_id {scene_id!r} escapes the scenes root {root}")
    return target


def check_scene_file(scenes_dir: str | Path, scene_id: str) -> Path:
    """The scene file of ``scene_id`` (see :func:`resolve_scene_path`), checked to be a readable file;
    an escaping id, a missing path, a directory or a file that cannot be opened raises ``ValueError``."""
    path = resolve_scene_path(scenes_dir, scene_id)
    if not path.exists():
        raise ValueError(f"scene file {path} not found under the scenes root {scenes_dir}")
    if not path.is_file():
        raise ValueError(f"scene path {path} under the scenes root {scenes_dir} is not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as err:
        raise ValueError(f"scene file {path} is not readable ({err.strerror or err})") from None
    return path


def resolve_scene_files(path: Path, episodes: Sequence[VLNCEEpisode],
                        scenes_dir: str | Path) -> tuple[dict[str, Path], list[DatasetFormatError]]:
    """The checked scene file (:func:`check_scene_file`) of each scene id of ``episodes`` (read from
    ``path``), and an error for each scene that fails, naming the first episode using it."""
    files: dict[str, Path] = {}
    errors: list[DatasetFormatError] = []
    failed: set[str] = set()
    for index, ep in enumerate(episodes):
        if ep.scene_id in files or ep.scene_id in failed:
            continue
        try:
            files[ep.scene_id] = check_scene_file(scenes_dir, ep.scene_id)
        except ValueError as err:
            failed.add(ep.scene_id)
            errors.append(DatasetFormatError(path, None, f"episodes[{index}].scene_id", f"episode {ep.episode_id!r}: {err}"))
    return files, errors


def check_ground_truth(gt_path: Path, episodes: Sequence[VLNCEEpisode],
                        ground_truth: Mapping[str, VLNCEGroundTruth] | None) -> None:
    """Refuse a split whose episodes with goals lack ground-truth paths (the file ``gt_path`` is missing, or
    has no entry for one of them): nDTW would otherwise be scored against another reference."""
    hint = ("nDTW and sDTW are scored against its paths, as in VLN-CE; set task.ndtw_reference=sparse "
            "(ndtw_reference='sparse') to score against the episodes' sparse reference_path instead")
    if ground_truth is None:
        if any(ep.goals for ep in episodes):
            raise DatasetFormatError(gt_path, None, None, f"ground-truth file not found; {hint}")
        return
    for ep in episodes:
        if ep.goals and ep.episode_id not in ground_truth:
            raise DatasetFormatError(gt_path, None, ep.episode_id,
                                     f"no ground truth for episode {ep.episode_id!r}; {hint}")


def check_vlnce_release(data_dir: str | Path, scenes_dir: str | Path | None = None, suffix: str = "",
                        require_vocab: bool = True) -> dict[str, Any]:
    """Validate a VLN-CE release folder as ``vlnkit eval`` reads it, and summarise it as JSON-able data.

    Every split is read by the environment's own reader and its scene files are checked by the
    environment's own check (:func:`resolve_scene_files`, under ``scenes_dir`` or, as the environment
    does without one, :func:`default_scenes_dir`), without loading the scenes. Returns ``episodes`` and
    ``gt`` (counts per split), ``without_goals`` (episodes per split that have no goals, as in test
    splits), ``scenes_dir`` (the scenes root used), ``scenes_referenced`` (distinct scene ids),
    ``scenes_missing`` (scene ids that escape the root or have no readable file), ``problems``
    (malformed files and episodes, and scenes failing their check, each up to ``MAX_PROBLEMS_PER_FILE``
    per file plus a count; empty splits; ground truth for unknown episodes) and ``ok``.
    """
    root = Path(data_dir)
    scenes_root = default_scenes_dir(root) if scenes_dir is None else Path(scenes_dir)
    problems: list[str] = []
    summary: dict[str, Any] = {
        "task": "vlnce",
        "data_dir": str(root),
        "scenes_dir": str(scenes_root),
        "episodes": {},
        "gt": {},
        "without_goals": {},
        "scenes_referenced": 0,
        "scenes_missing": [],
        "problems": problems,
        "ok": False,
    }
    splits = list_vlnce_splits(root, suffix)
    if not splits:
        problems.append(f"{root}: no <split>/<split>{suffix}.json.gz episode files found")
    scene_ids: set[str] = set()
    missing: set[str] = set()
    for split in splits:
        path = vlnce_split_path(root, split, suffix)
        try:
            result, errors = _parse_vlnce_split(path, require_vocab, not split.startswith("test"), collect=True)
        except DatasetFormatError as err:
            problems.append(str(err))
            continue
        summary["episodes"][split] = len(result.episodes)
        summary["without_goals"][split] = sum(1 for ep in result.episodes if not ep.goals)
        problems.extend(str(err) for err in errors[:MAX_PROBLEMS_PER_FILE])
        if len(errors) > MAX_PROBLEMS_PER_FILE:
            problems.append(f"{path}: {len(errors) - MAX_PROBLEMS_PER_FILE} more malformed episodes not listed")
        if not result.episodes and not errors:
            problems.append(f"{path}: no episodes to evaluate")
        scene_ids.update(ep.scene_id for ep in result.episodes)
        files, scene_errors = resolve_scene_files(path, result.episodes, scenes_root)
        missing.update({ep.scene_id for ep in result.episodes} - set(files))
        problems.extend(str(err) for err in scene_errors[:MAX_PROBLEMS_PER_FILE])
        if len(scene_errors) > MAX_PROBLEMS_PER_FILE:
            problems.append(f"{path}: {len(scene_errors) - MAX_PROBLEMS_PER_FILE} more missing or unreadable "
                            "scenes not listed")
        gt_path = vlnce_gt_path(root, split, suffix)
        try:
            check_ground_truth(gt_path, result.episodes, read_vlnce_gt(gt_path) if gt_path.is_file() else None)
        except DatasetFormatError as err:
            problems.append(str(err))
        if gt_path.is_file():
            try:
                gt = read_vlnce_gt(gt_path)
            except DatasetFormatError:
                continue
            summary["gt"][split] = len(gt)
            unknown = sorted(set(gt) - {ep.episode_id for ep in result.episodes})
            if unknown:
                problems.append(f"{gt_path}: ground truth for {len(unknown)} episodes not in {path.name}, e.g. {unknown[:3]}")
    summary["scenes_referenced"] = len(scene_ids)
    summary["scenes_missing"] = sorted(missing)
    summary["ok"] = not problems
    return summary


def write_r2r_ce_submission(trajectories: dict[str, list[dict[str, Any]]], path: str | Path) -> None:
    """Write the R2R-CE leaderboard submission: ``{episode_id: [{"position": [x, y, z], "heading": h,
    "stop": bool}, ...]}`` (JSON, atomically)."""
    _atomic_write_text(Path(path), json.dumps(trajectories) + "\n")


def write_rxr_ce_submission(paths: Sequence[tuple[str, Sequence[Sequence[float]]]], path: str | Path) -> None:
    """Write the RxR-CE leaderboard submission: JSON lines ``{"instruction_id": ..., "path": [[x, y, z], ...]}``."""
    lines = [json.dumps({"instruction_id": _maybe_int(iid), "path": [list(map(float, p)) for p in pts]}) + "\n"
             for iid, pts in paths]
    _atomic_write_text(Path(path), "".join(lines))

"""Readers and writers for the real public dataset formats (see ``shared/docs/datasets.md``).

Street tasks (Touchdown, Map2Seq, VELMA/FLAME copies) use a release folder
``<root>/graph/{nodes.txt,links.txt}`` and ``<root>/data/<split>.json`` (JSON lines, one route per line).
The synthetic generators write the same files through the writers here, so every code path is the one a
user with real data runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlnkit.envs.street.graph import StreetGraph

StreetTask = Literal["touchdown", "map2seq"]


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
        """The JSON record in the release format of ``kind`` (original extra fields preserved)."""
        rec = dict(self.record)
        rec["route_panoids"] = list(self.route)
        rec["navigation_text"] = self.instruction
        rec["start_heading"] = self.start_heading
        if self.kind == "touchdown":
            rec["route_id"] = _maybe_int(self.episode_id)
            if self.end_heading is not None:
                rec["end_heading"] = self.end_heading
        else:
            rec["id"] = _maybe_int(self.episode_id)
        return rec


def _maybe_int(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value


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

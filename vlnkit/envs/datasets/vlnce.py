"""Readers and writers for the VLN-CE dataset format (R2R-CE, RxR-CE; see ``shared/docs/datasets.md``):
gzipped JSON splits, ground truth, scenes, submissions.

Layout of a release: ``<root>/<split>/<split><suffix>.json.gz`` and, where present,
``<root>/<split>/<split><suffix>_gt.json.gz`` (``suffix`` is empty for R2R-CE, ``_guide`` for RxR-CE).
Scenes live under a separate root as ``<scenes root>/<scene_id>`` (``mp3d/<scan>/<scan>.glb``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlnkit.envs.datasets.common import (
    MAX_PROBLEMS_PER_FILE,
    DatasetFormatError,
    _atomic_write_text,
    _json_type,
    _maybe_int,
)

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

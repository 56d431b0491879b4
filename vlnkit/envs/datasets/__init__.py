"""Readers and writers for the real public dataset formats (see ``shared/docs/datasets.md``).

The package follows the data flow, one module per format plus what they share:

- :mod:`vlnkit.envs.datasets.common`: :class:`DatasetFormatError`, ``MAX_PROBLEMS_PER_FILE`` and the
  small helpers both formats use (atomic writes, id spelling, JSON type names);
- :mod:`vlnkit.envs.datasets.street`: the street tasks (Touchdown, Map2Seq, VELMA/FLAME copies), a release
  folder ``<root>/graph/{nodes.txt,links.txt}`` and ``<root>/data/<split>.json``: graph and episode readers
  and writers, split listing and loading, :func:`check_street_release` and :func:`write_submission`;
- :mod:`vlnkit.envs.datasets.vlnce`: VLN-CE (R2R-CE, RxR-CE), gzipped JSON splits
  ``<root>/<split>/<split><suffix>.json.gz`` with their ground truth, scene resolution and checks,
  :func:`check_ground_truth`, :func:`check_vlnce_release` and the leaderboard submissions.

The synthetic generators write the same files through the writers here, so every code path is the one a
user with real data runs. Every public name is re-exported here: import from ``vlnkit.envs.datasets``.
"""

from vlnkit.envs.datasets.common import MAX_PROBLEMS_PER_FILE, DatasetFormatError
from vlnkit.envs.datasets.street import (
    CANONICAL_SPLITS,
    LINK_COLUMNS,
    NODE_COLUMNS,
    SEEN_VALUES,
    STREET_TASKS,
    EpisodeReadResult,
    OnInvalidRoute,
    StreetEpisode,
    StreetTask,
    check_street_release,
    list_street_splits,
    load_street_split,
    read_episodes,
    read_graph,
    street_split_path,
    write_episodes,
    write_graph,
    write_submission,
)
from vlnkit.envs.datasets.vlnce import (
    QUATERNION_NORM_TOLERANCE,
    VLNCE_SPLITS,
    VLNCEEpisode,
    VLNCEGroundTruth,
    VLNCESplit,
    check_ground_truth,
    check_scene_file,
    check_vlnce_release,
    default_scenes_dir,
    list_vlnce_splits,
    read_vlnce_gt,
    read_vlnce_split,
    resolve_scene_files,
    resolve_scene_path,
    vlnce_gt_path,
    vlnce_split_path,
    write_r2r_ce_submission,
    write_rxr_ce_submission,
    write_vlnce_gt,
    write_vlnce_split,
)

__all__ = [
    "CANONICAL_SPLITS",
    "LINK_COLUMNS",
    "MAX_PROBLEMS_PER_FILE",
    "NODE_COLUMNS",
    "QUATERNION_NORM_TOLERANCE",
    "SEEN_VALUES",
    "STREET_TASKS",
    "VLNCE_SPLITS",
    "DatasetFormatError",
    "EpisodeReadResult",
    "OnInvalidRoute",
    "StreetEpisode",
    "StreetTask",
    "VLNCEEpisode",
    "VLNCEGroundTruth",
    "VLNCESplit",
    "check_ground_truth",
    "check_scene_file",
    "check_street_release",
    "check_vlnce_release",
    "default_scenes_dir",
    "list_street_splits",
    "list_vlnce_splits",
    "load_street_split",
    "read_episodes",
    "read_graph",
    "read_vlnce_gt",
    "read_vlnce_split",
    "resolve_scene_files",
    "resolve_scene_path",
    "street_split_path",
    "vlnce_gt_path",
    "vlnce_split_path",
    "write_episodes",
    "write_graph",
    "write_r2r_ce_submission",
    "write_rxr_ce_submission",
    "write_submission",
    "write_vlnce_gt",
    "write_vlnce_split",
]

"""VLN-CM: zero-shot vision-and-language navigation with collision mitigation (agent ``vlncm``).

Modules: the Attention Spot Predictor (:mod:`.asp`), the View Selector (:mod:`.view_selector`), the
Progress Monitor (:mod:`.progress`), the Open Map Predictor (:mod:`.open_map`) and the agent that
combines them (:mod:`.agent`); the street-graph agent built from the same modules (:mod:`.street`);
:mod:`.landmarks` gives the synthetic houses' ground-truth spots. Importing this package registers the
``vlncm`` and ``vlncm_street`` agents.
"""

from vlnkit.agents.vlncm.agent import SceneLabels, VLNCMAgent, agent_config
from vlnkit.agents.vlncm.asp import LLMSpotPredictor, RuleSpotPredictor, SpotPredictor, normalise_spot, spot_scores
from vlnkit.agents.vlncm.open_map import OccupancyMap, OpenMapConfig, OpenMapPredictor
from vlnkit.agents.vlncm.progress import ProgressMonitor
from vlnkit.agents.vlncm.street import StreetVLNCMAgent, city_labels, street_views
from vlnkit.agents.vlncm.view_selector import Selection, ViewSelector, view_angle

__all__ = [
    "LLMSpotPredictor",
    "OccupancyMap",
    "OpenMapConfig",
    "OpenMapPredictor",
    "ProgressMonitor",
    "RuleSpotPredictor",
    "SceneLabels",
    "Selection",
    "SpotPredictor",
    "StreetVLNCMAgent",
    "VLNCMAgent",
    "ViewSelector",
    "agent_config",
    "city_labels",
    "normalise_spot",
    "spot_scores",
    "street_views",
    "view_angle",
]

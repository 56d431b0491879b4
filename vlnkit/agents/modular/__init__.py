"""The modular pipeline agent with Mem4Nav memory (``agent=modular``): perception, mapping, instruction
grounding, planning over the topology graph, control. Importing the package registers the agent."""

from vlnkit.agents.modular.agent import ModularAgent, build_modular_agent
from vlnkit.agents.modular.language import LandmarkLexicon, SubGoal, parse_instruction
from vlnkit.agents.modular.mapping import EpisodicMap
from vlnkit.agents.modular.perception import Perception

__all__ = ["EpisodicMap", "LandmarkLexicon", "ModularAgent", "Perception", "SubGoal", "build_modular_agent",
           "parse_instruction"]

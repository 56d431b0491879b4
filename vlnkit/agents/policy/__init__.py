"""The FLAME-style multimodal policy with Mem4Nav memory tokens (``agent=policy``) and its imitation
training (``vlnkit train policy``). Importing the package registers the agent."""

from vlnkit.agents.policy.agent import PolicyAgent, build_policy_agent
from vlnkit.agents.policy.model import FlamePolicy, PolicyConfig
from vlnkit.agents.policy.train import load_policy, train_policy

__all__ = ["FlamePolicy", "PolicyAgent", "PolicyConfig", "build_policy_agent", "load_policy", "train_policy"]

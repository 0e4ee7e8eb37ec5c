"""An exact cache of the frozen MLLM's query states for text-only prompts (a throughput lever of the toy).

With the MLLM frozen and the query block frozen too (``model.queries.trainable=false``, the toy preset), the
MLLM's hidden states at the block are a pure function of the prompt's tokens::

    H(prompt) = FrozenMLLM(prompt ⊕ Z_input)[block]        (L_q, d), Z_input fixed

so a text-to-image step need not run the MLLM for a caption it has seen: the states are read back, keyed by
the prompt's token ids (the chat template, system prompt and prompt format are part of those tokens). Rows
with images (edit, recon, style) always run the MLLM. Equal to recomputation to float tolerance (the only
difference is the other rows' left padding in the batch the states were computed in, ~1e-7), and
invalidated when the query block or the MLLM (object, dtype, device, layer) changes. With a learnable query
block (``model.queries.trainable=true``) the states depend on trained weights and need their gradient: the
cache then passes every call through to the MLLM and stores nothing.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from mingexp.models.mllm import FrozenMLLM
from mingexp.models.processor import MLLMInputs


class PromptStateCache:
    """LRU map of text-only prompt → MLLM states at the (frozen) query block, bounded in memory.

    Args:
        max_megabytes: the cache's budget; the least recently used prompts are dropped beyond it. One toy
            prompt's states (scales [2, 4, 8]: 90 block tokens × 128) take 46 kB.
    """

    def __init__(self, max_megabytes: float = 1024.0) -> None:
        self.max_bytes = int(float(max_megabytes) * 2**20)
        self.entries: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0
        self._block: torch.Tensor | None = None  # the query block the entries were computed with
        self._mllm: tuple | None = None

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    @property
    def hit_rate(self) -> float:
        """The share of text-only rows read back so far."""
        return self.hits / max(self.hits + self.misses, 1)

    def stats(self) -> str:
        return (f"{self.hits}/{self.hits + self.misses} text-only rows read back ({self.hit_rate:.0%}), {len(self.entries)} prompts, "
                f"{self.bytes / 2**20:.0f} MB")

    def _still_valid(self, mllm: FrozenMLLM, block: torch.Tensor) -> None:
        identity = (id(mllm), mllm.dtype, mllm.device, mllm.layer)
        if self._mllm != identity or self._block is None or self._block.shape != block[0].shape or not torch.equal(self._block, block[0]):
            self.clear()
            self._mllm, self._block = identity, block[0].detach().clone()

    def __call__(self, mllm: FrozenMLLM, inputs: MLLMInputs, block: torch.Tensor, block_positions: torch.Tensor) -> torch.Tensor:
        """``mllm(inputs, block, block_positions)``, (B, L_q, D), with text-only rows read from the cache."""
        if block.requires_grad:  # a learnable block: its states need their gradient
            return mllm(inputs, block, block_positions)
        self._still_valid(mllm, block)
        # 1. each row's key: its prompt tokens (left padding dropped); rows with an image are never cached
        image_pad = mllm.processor.image_pad_id
        keys = [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(inputs.input_ids, inputs.attention_mask)]
        text_only = [image_pad not in key for key in keys]
        found = {r: self.entries[k] for r, k in enumerate(keys) if text_only[r] and k in self.entries}
        self.hits += len(found)
        self.misses += sum(text_only) - len(found)
        for r in found:
            self.entries.move_to_end(keys[r])
        # 2. the MLLM on the other rows only (every image row among them, so the images stay as they are)
        todo = [r for r in range(inputs.batch_size) if r not in found]
        out = block.new_empty(block.shape)
        if todo:
            computed = mllm(inputs.select(todo, image_pad), block[todo], block_positions)
            out[todo] = computed
            for r, h in zip(todo, computed):
                if text_only[r]:
                    self._store(keys[r], h.detach().clone())
        for r, h in found.items():
            out[r] = h
        return out

    def _store(self, key: tuple[int, ...], states: torch.Tensor) -> None:
        self.entries[key] = states
        self.bytes += states.numel() * states.element_size()
        while self.bytes > self.max_bytes and self.entries:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= dropped.numel() * dropped.element_size()

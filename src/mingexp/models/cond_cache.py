"""An exact cache of the frozen MLLM's query states (a throughput lever of the toy), optionally kept on disk.

With the MLLM frozen and the query block frozen too (``model.queries.trainable=false``, the toy preset), the
MLLM's hidden states at the block are a pure function of the prompt's tokens and, for a row with images, of
those images' pixels::

    H(prompt, images) = FrozenMLLM(prompt(images) ⊕ Z_input)[block]        (L_q, d), Z_input fixed

so a step need not run the MLLM for a row it has seen: the states are read back, keyed by the row's token ids (the
chat template, system prompt and prompt format are part of those tokens) and, for an image row, a digest of its
images' patches and grids (what the MLLM reads of them). Equal to recomputation to float tolerance (the only
difference is the other rows' left padding in the batch the states were computed in, ~1e-7), and invalidated when
the query block or the MLLM (object, dtype, device, layer) changes. With a learnable query block
(``model.queries.trainable=true``) the states depend on trained weights and need their gradient: the cache then
passes every call through to the MLLM and stores nothing.

``path``: the entries persist in ``<path>/`` (``states.safetensors`` + ``index.json``, written atomically by
:meth:`PromptStateCache.save`, which the training module calls when training ends), under the identity of what
computed them: a digest of the MLLM's weights, its dtype and layer, and of the query block. A cache from another
MLLM or query block is set aside (never read) when the first batch shows the difference; rows of another world are
keyed by their own tokens and pixels, so an entry is only ever read for the very row it was computed for.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import torch

from mingexp.models.mllm import FrozenMLLM
from mingexp.models.processor import MLLMInputs

Key = tuple  # (token ids...) for a text-only row; ((token ids...), images digest) for an image row
STATES, INDEX = "states.safetensors", "index.json"


def images_digest(inputs: MLLMInputs, span: tuple[list[int], slice]) -> str:
    """sha256 of one row's image patches and grids (what the MLLM reads of its images)."""
    images, patches = span
    h = hashlib.sha256()
    h.update(inputs.image_grid_thw[images].cpu().numpy().tobytes())
    h.update(inputs.pixel_values[patches].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class PromptStateCache:
    """LRU map of a row (prompt tokens, and its images' digest) → MLLM states at the (frozen) query block, bounded
    in memory, optionally persisted.

    Args:
        max_megabytes: the cache's budget; the least recently used rows are dropped beyond it. One toy row's
            states (scales [2, 4]: 20 block tokens × 128) take 10 kB.
        images: cache the rows with images too (edit, recon, style), keyed by their pixels.
        path: a folder to keep the entries in between runs (None: memory only).
    """

    def __init__(self, max_megabytes: float = 1024.0, images: bool = True, path: str | Path | None = None) -> None:
        self.max_bytes = int(float(max_megabytes) * 2**20)
        self.images = bool(images)
        self.path = Path(str(path)).expanduser() if path else None
        self.entries: OrderedDict[Key, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0
        self.image_hits = self.image_misses = 0
        self._block: torch.Tensor | None = None  # the query block the entries were computed with
        self._mllm: tuple | None = None
        self._identity: dict[str, str] | None = None  # identity() of the current MLLM and block, once computed
        self.set_aside: str | None = None  # why a persisted cache was not used

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    @property
    def hit_rate(self) -> float:
        """The share of cacheable rows read back so far."""
        return self.hits / max(self.hits + self.misses, 1)

    def stats(self) -> str:
        images = f"; image rows {self.image_hits}/{self.image_hits + self.image_misses}" if self.images else ""
        return (f"{self.hits}/{self.hits + self.misses} rows read back ({self.hit_rate:.0%}){images}, {len(self.entries)} entries, "
                f"{self.bytes / 2**20:.0f} MB")

    # ------------------------------------------------------------------ identity
    def _still_valid(self, mllm: FrozenMLLM, block: torch.Tensor) -> None:
        identity = (id(mllm), mllm.dtype, mllm.device, mllm.layer)
        if self._mllm != identity or self._block is None or self._block.shape != block[0].shape or not torch.equal(self._block, block[0]):
            self.clear()
            self._mllm, self._block, self._identity = identity, block[0].detach().clone(), None
            if self.path is not None:
                self._load(mllm)

    def identity(self, mllm: FrozenMLLM) -> dict[str, str]:
        """What the states depend on, for a persisted cache: the MLLM's weights, dtype and layer, and the block
        (digested once while they stay the same: a 7B MLLM's weights take seconds)."""
        from mingexp.lit.fingerprint import digest

        if self._identity is None:
            self._identity = {"mllm": digest(t for _, t in sorted(mllm.model.state_dict().items())), "dtype": str(mllm.dtype),
                              "layer": str(mllm.layer), "block": digest([self._block])}
        return self._identity

    # ------------------------------------------------------------------ the states
    def __call__(self, mllm: FrozenMLLM, inputs: MLLMInputs, block: torch.Tensor, block_positions: torch.Tensor) -> torch.Tensor:
        """``mllm(inputs, block, block_positions)``, (B, L_q, D), with the rows seen before read from the cache."""
        if block.requires_grad:  # a learnable block: its states need their gradient
            return mllm(inputs, block, block_positions)
        self._still_valid(mllm, block)
        # 1. each row's key: its prompt tokens (left padding dropped), and its images' digest
        image_pad = mllm.processor.image_pad_id
        spans = inputs.image_spans(image_pad)
        keys: list[Key | None] = []
        for ids, mask, span in zip(inputs.input_ids, inputs.attention_mask, spans):
            tokens = tuple(ids[mask.bool()].tolist())
            keys.append(tokens if not span[0] else ((tokens, images_digest(inputs, span)) if self.images else None))
        found = {r: self.entries[k] for r, k in enumerate(keys) if k is not None and k in self.entries}
        for r, k in enumerate(keys):
            if k is None:
                continue
            hit = r in found
            self.hits, self.misses = self.hits + hit, self.misses + (not hit)
            if spans[r][0]:
                self.image_hits, self.image_misses = self.image_hits + hit, self.image_misses + (not hit)
            if hit:
                self.entries.move_to_end(k)
        # 2. the MLLM on the other rows only, with their images
        todo = [r for r in range(inputs.batch_size) if r not in found]
        out = block.new_empty(block.shape)
        if todo:
            computed = mllm(inputs.select(todo, image_pad), block[todo], block_positions)
            out[todo] = computed
            for r, h in zip(todo, computed):
                if keys[r] is not None:
                    self._store(keys[r], h.detach().clone())
        for r, h in found.items():
            out[r] = h
        return out

    def _store(self, key: Key, states: torch.Tensor) -> None:
        self.entries[key] = states
        self.bytes += states.numel() * states.element_size()
        while self.bytes > self.max_bytes and self.entries:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= dropped.numel() * dropped.element_size()

    # ------------------------------------------------------------------ on disk
    def save(self, mllm: FrozenMLLM) -> Path | None:
        """Write the entries to :attr:`path` (atomically), with the identity they were computed under."""
        if self.path is None or self._block is None or not self.entries:
            return None
        from mingexp.io.records import write_json
        from mingexp.io.tensors import save_tensors

        self.path.mkdir(parents=True, exist_ok=True)
        names = [f"e{i}" for i in range(len(self.entries))]
        save_tensors(dict(zip(names, self.entries.values())), self.path / STATES)
        keys = [list(k) if not k or isinstance(k[0], int) else [list(k[0]), k[1]] for k in self.entries]
        write_json(self.path / INDEX, {"identity": self.identity(mllm), "names": names, "keys": keys})
        return self.path

    def _load(self, mllm: FrozenMLLM) -> None:
        """Read the persisted entries when their identity is this MLLM's and this block's; else set them aside."""
        index, states = self.path / INDEX, self.path / STATES
        if not (index.is_file() and states.is_file()):
            return
        from mingexp.io.tensors import read_tensors

        try:
            data = json.loads(index.read_text())
            saved, names, keys = data["identity"], data["names"], data["keys"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.set_aside = f"{index}: unreadable ({e}); recomputing"
            print(f"[mingexp] condition cache {self.set_aside}", flush=True)
            return
        now = self.identity(mllm)
        differs = [k for k in now if saved.get(k) != now[k]]
        if differs:
            self.set_aside = f"{self.path} was computed with another {', '.join(differs)}; not used (it is replaced when this run saves)"
            print(f"[mingexp] condition cache: {self.set_aside}", flush=True)
            return
        tensors = read_tensors(states)
        device = self._block.device
        for name, key in zip(names, keys):
            if name in tensors:
                k = tuple(key) if all(isinstance(t, int) for t in key) else (tuple(key[0]), str(key[1]))
                self._store(k, tensors[name].to(device))

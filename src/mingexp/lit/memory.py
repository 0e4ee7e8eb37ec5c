"""Memory per GPU for training, estimated from counts before a run starts: full fine-tuning against LoRA.

For each part of the model (its parameters counted, its blocks read from its config)::

    weights       frozen parameters × their dtype's bytes (bf16: 2), trainable ones × 4 (fp32 masters:
                  bf16-mixed keeps them in fp32)
    gradients     trainable × 4
    optimizer     trainable × 8 (AdamW's two fp32 moments)
    activations   for a part that backpropagates: with activation checkpointing each block keeps its input,
                  2·B·T·C bytes (bf16), and one block at a time holds its full set,
                  B·T·C·(34 + 5·a·T/C) bytes (Korthikanti et al. 2022, a transformer layer in 16-bit); without
                  checkpointing every block holds its full set

(B batch per GPU, T the block's tokens, C its width, a its heads.) Sharding (FSDP ``FULL_SHARD`` over N GPUs)
divides weights, gradients and optimizer state by N, not the activations. LoRA leaves the activations as
they are (the backward pass still runs through the frozen DiT) and removes the gradients and optimizer state
of everything but the adapters: that is the saving. Measured peaks differ by the allocator's slack, the
attention kernels' workspace and the data in flight: this is the budget's shape, not a promise.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

GIB = 2**30


@dataclass
class PartCost:
    """One part's counts: parameters, and (for a part gradients flow through) its blocks' shape."""

    name: str
    params: int
    trainable: int
    frozen_bytes: int = 2  # bytes per frozen parameter (bf16)
    backward: bool = False  # whether the backward pass runs through it (it trains, or something before it does)
    blocks: int = 0
    tokens: int = 0
    width: int = 0
    heads: int = 1
    checkpointing: bool = True

    def activations(self, batch: int) -> float:
        if not self.backward or not self.blocks:
            return 0.0
        full = batch * self.tokens * self.width * (34 + 5 * self.heads * self.tokens / self.width)
        if self.checkpointing:
            return self.blocks * 2 * batch * self.tokens * self.width + full
        return self.blocks * full


def counts(module: nn.Module) -> tuple[int, int]:
    """(parameters, trainable parameters) of a module."""
    params = sum(p.numel() for p in module.parameters())
    return params, sum(p.numel() for p in module.parameters() if p.requires_grad)


def estimate(parts: list[PartCost], batch: int, shards: int = 1) -> dict[str, float]:
    """Bytes per GPU by kind (``weights``, ``gradients``, ``optimizer``, ``activations``, ``total``)."""
    trainable = sum(p.trainable for p in parts)
    frozen = sum((p.params - p.trainable) * p.frozen_bytes for p in parts)
    out = {
        "weights": (frozen + 4 * trainable) / shards,
        "gradients": 4 * trainable / shards,
        "optimizer": 8 * trainable / shards,
        "activations": sum(p.activations(batch) for p in parts),
    }
    out["total"] = sum(out.values())
    return out


def model_parts(model) -> list[PartCost]:
    """The parts of a built :class:`~mingexp.models.unified.UnifiedModel` with their counts, at its native size."""
    dit, conn, mllm = model.dit, model.connector, model.mllm
    queries_train = any(p.requires_grad for p in model.queries.parameters())
    n_queries = model.queries.layout.num_queries
    text = mllm.text_config
    parts = [
        PartCost("mllm", *counts(mllm), backward=queries_train, blocks=int(text.num_hidden_layers), tokens=n_queries,
                 width=int(text.hidden_size), heads=int(text.num_attention_heads), checkpointing=False),
        PartCost("queries", *counts(model.queries)),
        PartCost("connector", *counts(conn), backward=True, blocks=int(conn.transformer.config.num_hidden_layers),
                 tokens=sum(s * s for s in model.queries.scales), width=conn.hidden_size,
                 heads=int(conn.transformer.config.num_attention_heads), checkpointing=bool(getattr(conn.transformer, "is_activation_checkpointing", False))),
        PartCost("dit", *counts(dit), backward=True, blocks=dit.num_blocks, tokens=dit.grid ** 2, width=dit.width,
                 heads=int(dit.config.num_attention_heads), checkpointing=bool(getattr(dit.transformer, "gradient_checkpointing", False))),
        PartCost("vae", *counts(model.vae)),
    ]
    if model.align is not None:
        parts.append(PartCost("align", *counts(model.align)))
    return parts


def table(parts: list[PartCost], batch: int, shards: int = 1, title: str = "") -> str:
    """The estimate as lines: parameters per part, then GiB per GPU by kind."""
    est = estimate(parts, batch, shards)
    rows = [title] if title else []
    rows.append("  parts: " + ", ".join(f"{p.name} {p.params / 1e6:,.1f} M ({p.trainable / 1e6:,.2f} M trained)" for p in parts))
    rows.append(f"  per GPU (batch {batch}, {shards}-way sharded): " + ", ".join(f"{k} {v / GIB:,.2f} GiB" for k, v in est.items()))
    return "\n".join(rows)

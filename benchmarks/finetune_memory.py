"""Memory per GPU to fine-tune the real-size model: full fine-tuning (the baseline) against LoRA, same run.

Builds the real parts on the meta device (no weights, no download: shapes only) from the public
checkpoints' configs (UPSTREAM.md §7: Qwen2.5-VL-7B-Instruct, a Qwen2.5-0.5B connector, SANA-1.6B-512px,
DC-AE f32c32), counts their parameters, injects the LoRA adapters of ``model.lora`` into the DiT (and, with
``--lora-connector``, the connector), and prints the estimate of :mod:`mingexp.lit.memory` for both, then
LoRA / full per kind. The query block is frozen in both (a release's queries are kept), the alignment off.

``--release``: the released Ming-Lite-Uni's shapes instead (mingexp.models.release): the ViT's merger out 8192 and
its projector 8192 → 3584 → 3584, the connector's single-Linear proj_out to 3584 and SANA behind its caption MLP
3584 → 2048 → 2304; full fine-tuning trains the released query block too (experiment/finetune_release), LoRA
freezes it (experiment/finetune_lora).

    python benchmarks/finetune_memory.py                       # batch 8 per GPU at 512 px, one GPU
    python benchmarks/finetune_memory.py --batch 32 --shards 8 # FSDP over 8 GPUs
    python benchmarks/finetune_memory.py --release             # the released model's parts
"""

from __future__ import annotations

import argparse

import torch

from mingexp.lit.memory import GIB, PartCost, counts, estimate, table
from mingexp.models.connector import Connector, FinestScale, L2Norm, LinearProjection, PerScaleStack
from mingexp.models.denoisers.sana_release import ReleasedSanaDenoiser
from mingexp.models import public
from mingexp.models.lora import DIT_TARGETS, QWEN2_TARGETS, LoRA
from mingexp.models.queries import build_layout
from mingexp.models.release.mllm import ProjectedVision

# the published configs shipped with mingexp (mingexp/public_configs, provenance in its SOURCES.md)
SANA_1600M_512 = public.public_config("Sana_1600M_512px_diffusers/transformer")
QWEN25_05B = {**public.public_config("Qwen2.5-0.5B"), "vocab_size": 1, "bos_token_id": None, "eos_token_id": None}  # fed embeddings: no table
QWEN25_VL_7B = public.public_config("Qwen2.5-VL-7B-Instruct")
DCAE = public.public_config("Sana_1600M_512px_diffusers/vae")
SCALES = (4, 8, 16)
RELEASED_VISION_OUT, RELEASED_HEAD_HIDDEN = 8192, 2048  # UPSTREAM.md §7: qwen2_5_vit/ merger and mlp.fc1


def real_parts(lora: LoRA | None, gradient_checkpointing: bool = True, release: bool = False) -> list[PartCost]:
    from diffusers import AutoencoderDC, SanaTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Config, Qwen2Model

    d = QWEN25_VL_7B["hidden_size"]
    vl = {**QWEN25_VL_7B, "vision_config": {**QWEN25_VL_7B["vision_config"], "out_hidden_size": RELEASED_VISION_OUT}} if release else QWEN25_VL_7B
    with torch.device("meta"):
        mllm = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**vl))
        stack = Qwen2Model(Qwen2Config(**QWEN25_05B))
        stack.embed_tokens = None  # fed embeddings, as Connector.build does
        dit = SanaTransformer2DModel.from_config({k: v for k, v in SANA_1600M_512.items() if not k.startswith("_")})
        if release:  # the released glue around the same parts
            projector = torch.nn.Sequential(torch.nn.Linear(RELEASED_VISION_OUT, d), torch.nn.GELU(), torch.nn.Linear(d, d))
            mllm.model.visual = ProjectedVision(mllm.model.visual, projector)
            connector = Connector(d, d, stack, build_layout(SCALES), stack=PerScaleStack(), tokens=FinestScale(), proj_out=LinearProjection,
                                  out_norm=L2Norm)
            dit = ReleasedSanaDenoiser(dit, d, RELEASED_HEAD_HIDDEN)
        else:
            connector = Connector(d, SANA_1600M_512["caption_channels"], stack, build_layout(SCALES))
        vae = AutoencoderDC.from_config({k: v for k, v in DCAE.items() if not k.startswith("_")})
    mllm.requires_grad_(False)
    vae.requires_grad_(False)
    library = dit.transformer if release else dit
    if lora is not None:
        lora.inject(dit, library, lora.dit, "dit")
        lora.inject(connector, connector.transformer, lora.connector, "connector")
    n_queries = sum(s * s for s in SCALES)
    query_params = sum(s * s * d for s in SCALES)
    return [
        PartCost("mllm", *counts(mllm)),
        PartCost("queries", query_params, query_params if release and lora is None else 0),
        PartCost("connector", *counts(connector), backward=True, blocks=24, tokens=n_queries, width=896, heads=14,
                 checkpointing=gradient_checkpointing),
        PartCost("dit", *counts(dit), backward=True, blocks=20, tokens=16 * 16, width=2240, heads=70, checkpointing=gradient_checkpointing),
        PartCost("vae", *counts(vae)),
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="images per GPU")
    p.add_argument("--shards", type=int, default=1, help="FSDP FULL_SHARD over this many GPUs")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--lora-connector", action="store_true", help="LoRA on the connector too (else it is frozen)")
    p.add_argument("--release", action="store_true", help="the released Ming-Lite-Uni's parts (module docstring)")
    args = p.parse_args(argv)
    lora = LoRA(rank=args.rank, dit=DIT_TARGETS, connector=QWEN2_TARGETS if args.lora_connector else None)
    full, adapted = real_parts(None, release=args.release), real_parts(lora, release=args.release)
    print(table(full, args.batch, args.shards, "full fine-tuning (baseline): the DiT and the connector train" + (", and the query block" if args.release else "")))
    print(table(adapted, args.batch, args.shards, f"LoRA r={args.rank} on the DiT's {list(DIT_TARGETS)}"
                + (f" and the connector's {list(QWEN2_TARGETS)}" if args.lora_connector else "; the connector frozen")))
    a, b = estimate(full, args.batch, args.shards), estimate(adapted, args.batch, args.shards)
    print("LoRA / full: " + ", ".join(f"{k} {b[k] / a[k]:.3f}" if a[k] else f"{k} -" for k in a)
          + f"  (total {a['total'] / GIB:.1f} → {b['total'] / GIB:.1f} GiB per GPU)")


if __name__ == "__main__":
    main()

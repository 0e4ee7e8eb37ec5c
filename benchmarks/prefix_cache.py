"""Prefix-cached vs full-sequence frozen-MLLM forward+backward at an editing-like shape.

Both paths run the real ``FrozenMLLM.forward`` (switch ``prefix_cache``) on a randomly initialised
Qwen2.5-VL language model: a 600-token prompt (an edit: ~576 image tokens + instruction) followed by the
342-token query block of scales [4, 8, 16]. Prints, for each path, the median wall time of forward +
backward (to the queries), the bytes autograd saves for backward (activation memory, counted by a
saved-tensors hook: device independent) and, on CUDA, the peak allocated memory above the weights;
then the ratios full / cached.

    python benchmarks/prefix_cache.py                          # CPU-sized model (default)
    python benchmarks/prefix_cache.py --preset qwen2.5-vl-7b   # the real 7B text widths (GPU, bf16)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mingexp.models.mllm import FrozenMLLM
from mingexp.models.processor import MLLMInputs, MLLMProcessor
from mingexp.models.queries import MultiScaleQueries
from mingexp.models.tiny import write_tiny_tokenizer

PRESETS = {
    # 1/8 of the 7B's width with its proportions (MLP 5.3x hidden, 7 query heads per KV head, head_dim 64
    # instead of 128), small enough for 2 CPU cores
    "cpu": dict(hidden_size=448, num_hidden_layers=8, num_attention_heads=7, num_key_value_heads=1, intermediate_size=2368),
    # Qwen2.5-VL-7B-Instruct's language model (UPSTREAM.md §7)
    "qwen2.5-vl-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, intermediate_size=18944),
}


def build_mllm(preset: str, dtype: torch.dtype, device: str, attn: str) -> FrozenMLLM:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    text = dict(PRESETS[preset])
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    half = head_dim // 2
    mrope = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    with tempfile.TemporaryDirectory() as tmp:
        tok = write_tiny_tokenizer(Path(tmp))
        processor = MLLMProcessor(tok, Qwen2VLImageProcessorPil(patch_size=14, merge_size=2))
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope}, **text),
        vision_config=dict(depth=1, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=text["hidden_size"]),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    config._attn_implementation = attn
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    return FrozenMLLM(model, processor)


def saved_bytes(fn, module: torch.nn.Module) -> int:
    """Bytes of distinct activations autograd saves for backward while ``fn`` runs (weights excluded)."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        key = t.untyped_storage().data_ptr()
        if key not in weights:
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def run(args) -> None:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"float32": torch.float32, "bf16": torch.bfloat16}[args.dtype or ("bf16" if device == "cuda" else "float32")]
    torch.manual_seed(0)
    mllm = build_mllm(args.preset, dtype, device, args.attn)
    queries = MultiScaleQueries(mllm.hidden_size, args.scales).to(device)
    special = set(mllm.processor.tokenizer.all_special_ids)
    vocab = [i for i in range(len(mllm.processor.tokenizer)) if i not in special]
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor(vocab)[torch.randint(len(vocab), (args.batch, args.prompt), generator=g)]
    inputs = MLLMInputs(ids.to(device), torch.ones_like(ids).to(device))
    probe = torch.randn(args.batch, queries.layout.block_length, mllm.hidden_size, device=device)

    def step():
        h = mllm(inputs, queries(args.batch), queries.layout.positions)
        (h.float() * probe).sum().backward()
        return h

    results = {}
    for name, cached in (("full", False), ("cached", True)):
        mllm.prefix_cache = cached
        step()  # warm-up
        times = []
        for _ in range(args.reps):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        act, _ = saved_bytes(lambda: mllm(inputs, queries(args.batch), queries.layout.positions), mllm)
        peak = None
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        results[name] = (statistics.median(times), act, peak)

    print(f"device={device} dtype={dtype} preset={args.preset} attn={args.attn} batch={args.batch} "
          f"prompt={args.prompt} query_block={queries.layout.block_length} reps={args.reps}")
    print(f"{'path':<8} {'fwd+bwd ms':>11} {'saved act MiB':>14} {'peak MiB':>9}")
    for name, (t, act, peak) in results.items():
        peak_s = f"{peak / 2**20:9.1f}" if peak is not None else f"{'-':>9}"
        print(f"{name:<8} {t * 1e3:11.1f} {act / 2**20:14.1f} {peak_s}")
    (tf, af, pf), (tc, ac, pc) = results["full"], results["cached"]
    line = f"ratio full/cached: time {tf / tc:.2f}x  activation memory {af / ac:.2f}x"
    if pf is not None:
        line += f"  peak memory {pf / pc:.2f}x"
    print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--prompt", type=int, default=600, help="prompt tokens")
    p.add_argument("--scales", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=["float32", "bf16"], default=None)
    p.add_argument("--attn", default="sdpa", help="sdpa | eager | flash_attention_2")
    run(p.parse_args())


if __name__ == "__main__":
    main()

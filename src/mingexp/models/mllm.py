"""The frozen multimodal LLM that reads the prompt (text + images) and the learnable query block.

Ming-Lite-Uni keeps its MLLM (M2-omni; a stock Qwen2.5-VL is the public stand-in) frozen and reads the
hidden states at the query positions (paper eq. 4, H = f_θ(Z_input)) from the last layer after the final
RMSNorm. Any Qwen2-VL / Qwen2.5-VL checkpoint in the transformers format loads here by path.

Prefix-cached forward
---------------------
The language model is causal and frozen, so the prompt's keys and values never depend on the queries.
``prefix_cache=True`` runs the prompt once under ``torch.no_grad()`` into a KV cache and runs only the
query block with autograd against that cache::

    full:   [prompt (L_p) | queries (L_q)] --autograd over L_p + L_q tokens--> H[-L_q:]
    cached: prompt --no_grad--> KV cache;  queries + cache --autograd over L_q tokens--> H

Both compute the same function (tested to 1e-5 in fp32, hidden states and query gradients); the cached
one stores no prompt activations and runs no backward through the prompt. ``prefix_cache=False`` keeps
the full-sequence path for comparison (``benchmarks/prefix_cache.py``).

Positions are Qwen's 3-D M-RoPE ids: the prompt's come from the model's own ``get_rope_index`` (text
1-D, images as (t, h, w) grids) and the query block continues after the largest prompt position with the
per-token offsets of :class:`~mingexp.models.queries.MultiScaleQueries` (an s×s grid per scale).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mingexp.errors import ConfigError, checkpoint_dir
from mingexp.io.pretrained import load_pretrained
from mingexp.models.processor import MLLMInputs, MLLMProcessor
from mingexp.utils import resolve_dtype

SUPPORTED_MODEL_TYPES = ("qwen2_5_vl", "qwen2_vl")


def cache_kwarg(module: nn.Module) -> str:
    """The name a transformers model's forward takes its KV cache by (and its output returns it by): ``cache`` since
    transformers 5.x renamed it, ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


class FrozenMLLM(nn.Module):
    """A frozen Qwen2(.5)-VL returning hidden states at the query-block positions.

    Args:
        model: a ``Qwen2_5_VLForConditionalGeneration`` (or Qwen2-VL) instance.
        processor: the matching :class:`MLLMProcessor`.
        layer: which hidden states to return: ``-1`` = last layer after the final norm (default, as the
            released code); ``k`` in ``0..num_layers`` = output of decoder layer k (0 = input embeddings).
        prefix_cache: run the prompt once without autograd into a KV cache (see module docstring).
    """

    def __init__(self, model: nn.Module, processor: MLLMProcessor, layer: int = -1, prefix_cache: bool = True) -> None:
        super().__init__()
        model_type = getattr(model.config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"model.mllm.path holds a '{model_type}' model; supported: {SUPPORTED_MODEL_TYPES}.")
        self.model = model
        self.processor = processor
        n_layers = self.text_config.num_hidden_layers
        if layer != -1 and not 0 <= layer <= n_layers:
            raise ConfigError(f"model.mllm.layer={layer} is outside the MLLM's layers: use -1 (last, after norm) or 0..{n_layers}.")
        self.layer = layer
        self.prefix_cache = prefix_cache
        # Frozen: no parameter of the MLLM is ever trained, and it stays in eval mode (no dropout) even
        # when a trainer calls .train() on the parent module (see train() below).
        self.model.requires_grad_(False)
        self.model.eval()

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: str = "float32",
        layer: int = -1,
        prefix_cache: bool = True,
        attn_implementation: str = "sdpa",
        trust_remote_code: bool = False,
        processor: Callable[..., MLLMProcessor] = MLLMProcessor.from_pretrained,
    ) -> "FrozenMLLM":
        """Load by path (``model.mllm.path``). ``trust_remote_code`` stays off unless asked for.

        ``processor``: the processor's options as a partial taking the folder (``model.mllm.processor``, the node
        the datamodule reads too: its workers tokenise exactly as the model does)."""
        from transformers import AutoConfig, AutoModelForImageTextToText

        folder = checkpoint_dir(path, "model.mllm.path", "a Qwen2.5-VL checkpoint")
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"model.mllm.path={path} holds a '{config.model_type}' model; supported: {SUPPORTED_MODEL_TYPES}.")
        model = load_pretrained(  # safetensors only, every tensor checked (mingexp.io.pretrained)
            AutoModelForImageTextToText.from_pretrained,
            folder,
            "model.mllm",
            dtype=resolve_dtype(dtype, "model.mllm.dtype"),
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        return cls(model, processor(folder), layer=layer, prefix_cache=prefix_cache)

    # -------------------------------------------------------------- properties
    @property
    def text_config(self):
        return self.model.config.get_text_config()

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def backbone(self) -> nn.Module:
        """The ``Qwen2_5_VLModel`` (vision tower + language model, no LM head)."""
        return self.model.model

    def train(self, mode: bool = True) -> "FrozenMLLM":
        # Frozen towers never leave eval mode.
        super().train(mode)
        self.model.eval()
        return self

    def token_embeddings(self, tokens: list[str]) -> torch.Tensor:
        """Input embeddings of the given special tokens, (len(tokens), D). Used to initialise boundary tokens."""
        vocab = self.processor.tokenizer.get_vocab()
        ids = torch.tensor([vocab[t] for t in tokens], device=self.device)
        return self.backbone.get_input_embeddings()(ids).detach().float().cpu()

    def boundary_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The MLLM's own image-boundary embeddings (``<|vision_start|>``, ``<|vision_end|>``; the release's
        ``<image>``, ``</image>``: the processor's), each (D,)."""
        e = self.token_embeddings([self.processor.image_start, self.processor.image_end])
        return e[0], e[1]

    def mean_embedding_norm(self) -> float:
        """Mean L2 norm of the input-embedding rows: the natural scale for new tokens fed to this model."""
        w = self.backbone.get_input_embeddings().weight
        return float(w.detach().float().norm(dim=-1).mean())

    # ------------------------------------------------------------------ prompt
    @torch.no_grad()
    def embed_prompt(self, inputs: MLLMInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed the prompt (text tokens + merged vision features) and compute its M-RoPE positions.

        Returns:
            embeds: (B, L_p, D) in the MLLM dtype
            position_ids: (3, B, L_p) long
            next_position: (B,) long, first free position after each row's prompt
        """
        backbone = self.backbone
        input_ids = inputs.input_ids
        embeds = backbone.get_input_embeddings()(input_ids)
        if inputs.pixel_values is not None:
            # 1. vision tower on every image of the batch, then scatter into the placeholder positions
            feats = backbone.get_image_features(inputs.pixel_values, inputs.image_grid_thw, return_dict=True).pooler_output
            feats = torch.cat(feats, dim=0).to(embeds.device, embeds.dtype)
            mask, _ = backbone.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=feats)
            embeds = embeds.masked_scatter(mask, feats)
        # 2. 3-D M-RoPE positions (text: 1-D, images: (t, h, w) grids); padding gets position 0
        mm_token_type_ids = (input_ids == backbone.config.image_token_id).int()
        position_ids, _ = backbone.get_rope_index(
            input_ids,
            mm_token_type_ids=mm_token_type_ids,
            image_grid_thw=inputs.image_grid_thw,
            attention_mask=inputs.attention_mask,
        )
        next_position = position_ids.amax(dim=(0, 2)) + 1
        return embeds, position_ids, next_position

    # ----------------------------------------------------------------- forward
    def forward(self, inputs: MLLMInputs, query_block: torch.Tensor, block_positions: torch.Tensor) -> torch.Tensor:
        """Hidden states at the query-block positions.

        Args:
            inputs: the tokenised prompts (left padded).
            query_block: (B, L_q, D) the query block embeddings (boundary tokens + queries + grid encoding);
                usually trainable fp32 parameters: they are cast to the MLLM dtype here.
            block_positions: (3, L_q) M-RoPE offsets of the block's tokens relative to the block start.

        Returns:
            (B, L_q, D) hidden states from ``self.layer``, in ``query_block``'s dtype.
        """
        lm = self.backbone.language_model
        out_dtype = query_block.dtype
        # 1. the prompt: embeddings, positions, and where the block starts in each row
        prompt, prompt_pos, start = self.embed_prompt(inputs)
        B, Lq = query_block.shape[0], query_block.shape[1]
        if B != prompt.shape[0]:
            raise ValueError(f"query block batch {B} != prompt batch {prompt.shape[0]}")
        # 2. the block's positions continue after each row's prompt: (3, B, L_q)
        q_pos = start.view(1, B, 1) + block_positions.to(start.device).view(3, 1, Lq)
        q = query_block.to(self.dtype)
        mask = torch.cat([inputs.attention_mask, inputs.attention_mask.new_ones(B, Lq)], dim=1)
        want_hidden = self.layer != -1
        if self.prefix_cache:
            # 3a. prompt once, without autograd, into a KV cache; then only the block, with autograd
            # transformers' current cache API (``cache=`` / ``.cache``); the name it had before (``past_key_values``)
            # where the installed version predates it
            name = cache_kwarg(lm)
            with torch.no_grad():
                prefix = lm(inputs_embeds=prompt, attention_mask=inputs.attention_mask, position_ids=prompt_pos, use_cache=True)
            out = lm(
                inputs_embeds=q,
                attention_mask=mask,
                position_ids=q_pos,
                use_cache=True,
                output_hidden_states=want_hidden,
                **{name: getattr(prefix, name)},
            )
        else:
            # 3b. the whole sequence with autograd (reference path)
            out = lm(
                inputs_embeds=torch.cat([prompt, q], dim=1),
                attention_mask=mask,
                position_ids=torch.cat([prompt_pos, q_pos], dim=2),
                use_cache=False,
                output_hidden_states=want_hidden,
            )
        h = out.hidden_states[self.layer] if want_hidden else out.last_hidden_state
        return h[:, -Lq:].to(out_dtype)  # the full path returns the prompt too; the cached one only the block

    # ------------------------------------------------------------ understanding
    @torch.no_grad()
    def chat(self, images, text: str, max_new_tokens: int = 64, do_sample: bool = False, **generate_kwargs) -> str:
        """Answer ``text`` about ``images`` (a PIL image, a list of them, or None) with the frozen MLLM's ``generate``."""
        if images is None:
            images = []
        elif not isinstance(images, (list, tuple)):
            images = [images]
        inputs = self.processor([text], [list(images)], prompt_format="chat").to(self.device)
        kwargs = dict(
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask,
            mm_token_type_ids=(inputs.input_ids == self.backbone.config.image_token_id).int(),
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=self.processor.pad_id,
        )
        if inputs.pixel_values is not None:
            kwargs.update(pixel_values=inputs.pixel_values.to(self.dtype), image_grid_thw=inputs.image_grid_thw)
        self.backbone.rope_deltas = None  # generate() caches rope deltas on the model; start clean
        out = self.model.generate(**kwargs, **generate_kwargs)
        new_tokens = out[0, inputs.input_ids.shape[1] :]
        return self.processor.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

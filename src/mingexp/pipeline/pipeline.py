"""``MingUniPipeline``: a trained unified model used like a diffusers pipeline (generate, edit, chat, sessions).

Its folder (``save_pretrained`` / ``from_pretrained``, ``python -m mingexp.export``) is :mod:`mingexp.io.export`'s: the
sum of the trained parts' own folders plus one small JSON, read as data from anyone (no pickle, mingexp's own
builders only, loader flags such as ``trust_remote_code`` from the caller only), every tensor loaded exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from PIL import Image

from mingexp.models.generation import generate, seed_range
from mingexp.models.unified import UnifiedModel
from mingexp.pipeline.images import InputError, check_text, load_image
from mingexp.utils import resolve_dtype

from mingexp.io.export import FORMAT, FORMAT_VERSION, INDEX  # noqa: F401 (the format's names, re-exported)

if TYPE_CHECKING:
    from mingexp.pipeline.session import Session


class MingUniPipeline:
    """Generate, edit and chat with a trained model.

    Args:
        model: the unified model (eval mode).
        config: the model config it was built from (plain dict with ``_target_`` s), kept for ``save_pretrained``.
    """

    def __init__(self, model: UnifiedModel, config: dict[str, Any], max_prompt_tokens: int | None = None) -> None:
        self.model = model.eval()
        self.config = dict(config)
        # the cap on a prompt's tokens (None: what the MLLM's positions leave, see prompt_cap)
        self.max_prompt_tokens = max_prompt_tokens
        self._null: torch.Tensor | None = None  # the null condition, computed once (weights are fixed here)
        self._scaffold: dict[tuple, int] = {}  # tokens around an empty prompt, per image-size tuple

    # ------------------------------------------------------------ prompt caps
    def prompt_cap(self, images: Sequence[Image.Image] = (), new_tokens: int = 0, chat: bool = False) -> int:
        """The most tokens a prompt may have: ``max_prompt_tokens`` when set, else what the MLLM's positions
        leave after the template, the images' tokens, the query block (conditioning) or the answer (``chat``)."""
        mllm = self.model.mllm
        positions = int(getattr(mllm.text_config, "max_position_embeddings", 0) or 0)
        key = (chat, tuple(im.size for im in images))
        if key not in self._scaffold:
            kwargs = {"prompt_format": "chat"} if chat else {}
            self._scaffold[key] = int(mllm.processor([""], [list(images)], **kwargs).input_ids.shape[1])
        reserved = self._scaffold[key] + (int(new_tokens) if chat else self.model.queries.layout.block_length)
        derived = positions - reserved if positions else None
        caps = [c for c in (self.max_prompt_tokens, derived) if c is not None]
        if not caps:
            return 1 << 30
        cap = min(caps)
        if cap < 1:
            raise InputError(f"the MLLM's {positions} positions leave no room for a prompt after {reserved} reserved tokens "
                             "(template, images, query block or answer); use smaller images or fewer new tokens.")
        return cap

    def check_prompt(self, text, what: str = "prompt", images: Sequence[Image.Image] = (), new_tokens: int = 0,
                     chat: bool = False) -> str:
        """``text`` stripped, or an :class:`InputError` when it is empty or over :meth:`prompt_cap` tokens."""
        text = check_text(text, what)
        cap = self.prompt_cap(images, new_tokens, chat)
        if len(text) > 64 * cap:  # no tokenizer makes 64 characters one token: refused without tokenising
            raise InputError(f"{what} of {len(text)} characters is far over the cap of {cap} tokens; shorten it.")
        n = len(self.model.mllm.processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        if n > cap:
            raise InputError(f"{what} of {n} tokens is over the cap of {cap} tokens (the MLLM's positions less the template, "
                             "images and query block, or max_prompt_tokens); shorten it.")
        return text

    def null_tokens(self) -> torch.Tensor:
        """(1, T, C_cap): the MLLM on the empty prompt (or zeros), cached after the first call."""
        if self._null is None:
            with torch.no_grad():
                like = self.model.encode(self.model.mllm.processor([""]).to(self.device)).tokens  # the token shape
                self._null = self.model.null_tokens(like)
        return self._null

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, out: str | Path, copy_mllm: bool = False, lora: str = "merged", progress: bool = False) -> Path:
        """Write the export folder (:func:`mingexp.io.export.write`). ``copy_mllm`` copies the MLLM folder instead of
        referencing it; ``lora``: ``merged`` (a plain model) or ``separate`` (the DiT's base weights plus its adapter in
        ``transformer/lora/``); ``progress``: a bar over the parts as they are written."""
        from mingexp.io import export

        return export.write(self.model, self.config, out, copy_mllm=copy_mllm, lora=lora, progress=progress)

    # ----------------------------------------------------------------- loading
    @staticmethod
    def read_index(folder: str | Path) -> dict:
        from mingexp.io import export

        return export.read_index(folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
                        mllm_path: str | None = None, trust_remote_code: bool = False,
                        attn_implementation: str = "sdpa") -> "MingUniPipeline":
        """Load a folder written by :meth:`save_pretrained` (:func:`mingexp.io.export.load`).

        Args:
            mllm_path: overrides the referenced MLLM location.
            trust_remote_code / attn_implementation: the MLLM's loader flags. They are the caller's to give:
                the folder's own values are ignored, and a folder asking for remote code is refused
                (:mod:`mingexp.untrusted`).
        """
        from mingexp.io import export

        model, config = export.load(folder, mllm_path=mllm_path, trust_remote_code=trust_remote_code, attn_implementation=attn_implementation)
        return cls(model, config).to(device, dtype)

    def to(self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> "MingUniPipeline":
        """Move (and optionally cast, e.g. ``bf16`` on GPU) every part."""
        kwargs = {}
        if device is not None:
            kwargs["device"] = torch.device(device)
        if dtype is not None:
            kwargs["dtype"] = resolve_dtype(dtype, "dtype")
        if kwargs:
            self.model.to(**kwargs)
            self._null = None
        return self

    def compile(self, **compile_kwargs) -> "MingUniPipeline":
        """``torch.compile`` the DiT (the per-step cost); the first call of each shape pays the compilation."""
        self.model.dit = torch.compile(self.model.dit, **compile_kwargs)
        return self

    @property
    def device(self) -> torch.device:
        return self.model.device

    # --------------------------------------------------------------- inference
    def generate(self, prompt: str | Sequence[str], num_images: int = 1, steps: int | None = None, guidance_scale: float | None = None,
                 height: int | None = None, width: int | None = None, seed: int | None = 0, batch_size: int = 16,
                 progress: Callable[[int, int], None] | None = None) -> list[Image.Image]:
        """Text to image: ``num_images`` per prompt, batched; image k of the call uses ``seed + k`` (the seed rule
        of :func:`mingexp.models.generation.generate`: the same seed gives the same image in a training sheet or
        an evaluation). ``progress(done, total)`` follows the sampler's steps."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [self.check_prompt(p, "prompt") for p in prompts for _ in range(int(num_images))]
        return generate(self.model, prompts, seed_range(seed or 0, len(prompts)), batch_size=batch_size, steps=steps,
                        guidance_scale=guidance_scale, height=height, width=width, null=self.null_tokens(), progress=progress)

    def edit(self, image, instruction: str, steps: int | None = None, guidance_scale: float | None = None,
             image_guidance_scale: float | None = None, height: int | None = None, width: int | None = None,
             seed: int | None = 0, progress: Callable[[int, int], None] | None = None) -> Image.Image:
        """Edit ``image`` (path or PIL) by ``instruction``; the source image goes through the MLLM, as in training.

        ``image_guidance_scale`` adds InstructPix2Pix-style image guidance (for models trained with the
        instruction dropped); None = plain guidance on the instruction + image condition.
        """
        source = load_image(image)
        instruction = self.check_prompt(instruction, "instruction", [source])
        return generate(self.model, [instruction], [seed or 0], [[source]], steps=steps, guidance_scale=guidance_scale,
                        image_guidance_scale=image_guidance_scale, height=height, width=width, null=self.null_tokens(),
                        progress=progress)[0]

    def chat(self, images, question: str, max_new_tokens: int = 64, max_time: float | None = None) -> str:
        """Answer ``question`` about ``images`` (one, a list, or None) with the frozen MLLM; ``max_time`` (seconds)
        stops the answer early (transformers' ``MaxTimeCriteria``)."""
        if images is None:
            loaded = []
        else:
            loaded = [load_image(im) for im in (images if isinstance(images, (list, tuple)) else [images])]
        question = self.check_prompt(question, "question", loaded, new_tokens=max_new_tokens, chat=True)
        extra = {"max_time": float(max_time)} if max_time else {}
        return self.model.chat(loaded, question, max_new_tokens=max_new_tokens, **extra)

    def session(self, **defaults) -> "Session":
        """A multi-turn session (generate → edit → edit …, undo, save); ``defaults`` go to every turn."""
        from mingexp.pipeline.session import Session

        return Session(self, **defaults)

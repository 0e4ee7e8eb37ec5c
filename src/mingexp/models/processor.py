"""MLLM-side preprocessing: chat-format prompt, image placeholders, tokenisation, collation.

Runs anywhere (data-loader workers included) and needs no torchvision: the tokenizer comes from
``AutoTokenizer`` and the image processor from ``AutoImageProcessor`` (PIL backend), both from the
checkpoint folder, and the image placeholder is expanded here instead of by ``AutoProcessor`` (which, for
Qwen2.5-VL, insists on a video processor that imports torchvision).

One prompt becomes::

    <|im_start|>system\\n{system}<|im_end|>\\n
    <|im_start|>user\\n<|vision_start|><|image_pad|>×n<|vision_end|>...{text}<|im_end|>\\n
    <|im_start|>assistant\\n                                     <- the query block follows here

with n = grid_t·grid_h·grid_w / merge_size² placeholder tokens per image, which the MLLM replaces by
that image's merged vision features.

Images go where the text says ``<image>``; when the text has no such marker they go before the text.

``prompt_format="plain"`` drops the chat scaffolding (system and role tokens) from conditioning prompts:
a start token, then the text and its image blocks only. A small MLLM whose attention is not yet content-selective then sees
far more of the prompt at the queries (toy preset); answering (``chat``) always uses the chat format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from mingexp.errors import ConfigError
from mingexp.utils import to_rgb

IMAGE_MARKER = "<image>"
IMAGE_PAD = "<|image_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
PROMPT_FORMATS = ("chat", "plain")
PLAIN_START = "<|im_start|>"


@dataclass
class MLLMInputs:
    """A tokenised, left-padded batch for the frozen MLLM.

    Left padding puts the last prompt token of every row at the same index, so the query block that
    follows it starts at the same index in every row (the prefix cache relies on this).

    Shapes:
        input_ids:      (B, L) long, image placeholders already expanded
        attention_mask: (B, L) long, 0 on left padding
        pixel_values:   (P, C·T·p·p) float, the image processor's flattened patches of every image, or None
        image_grid_thw: (I, 3) long, (t, h, w) patch grid of every image in batch order, or None
        labels:         (B, L) long, answer token ids and -100 elsewhere (understanding data), or None
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    def image_spans(self, image_pad_id: int) -> list[tuple[list[int], slice]]:
        """Per row, its images (indices into ``image_grid_thw``) and its patches (a slice of ``pixel_values``):
        images come in batch order, one run of ``image_pad_id`` tokens each."""
        if self.pixel_values is None or self.image_grid_thw is None:
            return [([], slice(0, 0)) for _ in range(self.batch_size)]
        is_pad = self.input_ids == image_pad_id
        starts = is_pad & ~torch.nn.functional.pad(is_pad[:, :-1], (1, 0), value=False)  # a run's first token
        counts = starts.sum(dim=1).tolist()
        patches = self.image_grid_thw.prod(dim=1).tolist()
        out, image, patch = [], 0, 0
        for n in counts:
            size = sum(patches[image: image + n])
            out.append((list(range(image, image + n)), slice(patch, patch + size)))
            image, patch = image + n, patch + size
        if image != len(patches) or patch != self.pixel_values.shape[0]:
            raise ValueError(f"MLLMInputs: {image} image blocks in the tokens but {len(patches)} images in image_grid_thw.")
        return out

    def select(self, rows: Sequence[int], image_pad_id: int) -> "MLLMInputs":
        """The batch of ``rows`` (in that order), with their images' patches and grids only. Rows with images keep
        their batch order (``pixel_values`` / ``image_grid_thw`` list every image in batch order)."""
        rows = list(rows)
        if self.pixel_values is None:
            pixels, grid = None, self.image_grid_thw
        else:
            spans = self.image_spans(image_pad_id)
            with_images = [r for r in rows if spans[r][0]]
            if with_images != sorted(with_images):
                raise ValueError("MLLMInputs.select keeps rows with images in batch order.")
            if not with_images:
                pixels, grid = None, None
            elif len(with_images) == sum(1 for s in spans if s[0]):
                pixels, grid = self.pixel_values, self.image_grid_thw  # every image row kept: nothing to cut
            else:
                pixels = torch.cat([self.pixel_values[spans[r][1]] for r in with_images])
                grid = self.image_grid_thw[[i for r in with_images for i in spans[r][0]]]
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return MLLMInputs(self.input_ids[rows], self.attention_mask[rows], pixels, grid, pick(self.labels))

    def to(self, device: torch.device | str) -> "MLLMInputs":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return MLLMInputs(
            move(self.input_ids), move(self.attention_mask), move(self.pixel_values), move(self.image_grid_thw), move(self.labels)
        )


class MLLMProcessor:
    """Tokenizer + image processor + chat template of one MLLM checkpoint (Qwen2-VL / Qwen2.5-VL family).

    Class attributes (a checkpoint family with other conventions is a subclass, e.g. the released
    Ming-Lite-Uni's :class:`~mingexp.models.release.processor.ReleasedProcessor`):
        image_pad / image_start / image_end: the tokens of one image block, ``start pad×n end``.
    """

    image_pad: str = IMAGE_PAD
    image_start: str = VISION_START
    image_end: str = VISION_END

    def __init__(
        self,
        tokenizer,
        image_processor,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        image_size: int | None = None,
        prompt_format: str = "chat",
    ) -> None:
        if prompt_format not in PROMPT_FORMATS:
            raise ConfigError(f"model.mllm.processor.prompt_format={prompt_format!r}: use one of {PROMPT_FORMATS}.")
        self.prompt_format = prompt_format
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.system_prompt = system_prompt
        self.image_size = image_size
        self.merge_size = int(getattr(image_processor, "merge_size", 2))
        self.check_tokenizer(tokenizer)
        self.image_pad_id = tokenizer.get_vocab()[self.image_pad]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.end_of_turn = "<|im_end|>"

    def check_tokenizer(self, tokenizer) -> None:
        """The tokenizer must know the image-block tokens and (for the chat format) carry a chat template."""
        if tokenizer.chat_template is None:
            raise ConfigError(
                "the MLLM tokenizer has no chat template: the checkpoint folder needs chat_template.jinja "
                "(or chat_template.json / a chat_template entry in tokenizer_config.json)."
            )
        vocab = tokenizer.get_vocab()
        missing = [t for t in (self.image_pad, self.image_start, self.image_end) if t not in vocab]
        if missing:
            raise ConfigError(f"the MLLM tokenizer lacks the Qwen-VL special tokens {missing}; is model.mllm.path a Qwen2(.5)-VL checkpoint?")

    @classmethod
    def from_pretrained(
        cls, path: str | Path, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, image_size: int | None = None, prompt_format: str = "chat"
    ) -> "MLLMProcessor":
        from transformers import AutoImageProcessor, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        if tokenizer.chat_template is None:
            # Some VL checkpoints keep the template beside the processor rather than the tokenizer.
            for name in ("chat_template.jinja", "chat_template.json"):
                f = Path(path) / name
                if f.is_file():
                    text = f.read_text()
                    if name.endswith(".json"):
                        import json

                        text = json.loads(text)["chat_template"]
                    tokenizer.chat_template = text
                    break
        image_processor = AutoImageProcessor.from_pretrained(str(path))
        return cls(tokenizer, image_processor, system_prompt=system_prompt, image_size=image_size, prompt_format=prompt_format)

    # ------------------------------------------------------------------ text
    def chat_text(self, prompt: str, num_images: int, prompt_format: str | None = None) -> str:
        """The string of one user turn with ``num_images`` images: chat format ending in the assistant prefix,
        or (``plain``) the text with its image blocks only."""
        n_markers = prompt.count(IMAGE_MARKER)
        if n_markers and n_markers != num_images:
            raise ValueError(
                f"the prompt has {n_markers} {IMAGE_MARKER} placeholder(s) but {num_images} image(s) were given: "
                f"pass one image per {IMAGE_MARKER}, or no marker at all to put the images before the text."
            )
        reserved = [t for t in (self.image_pad, self.image_start, self.image_end) if t != IMAGE_MARKER]
        if any(t in part for part in prompt.split(IMAGE_MARKER) for t in reserved):
            raise ValueError(f"the prompt contains a reserved token of {reserved}; write {IMAGE_MARKER} where an image goes instead.")
        content = self.content(prompt, num_images)
        if (prompt_format or self.prompt_format) == "plain":
            # A start token keeps even the empty (null-condition) prompt one position long.
            return PLAIN_START + "".join(self.image_block if c["type"] == "image" else c["text"] for c in content)
        return self.chat_string(content)

    @property
    def image_block(self) -> str:
        """One image's tokens before expansion: start, one pad (expanded to the image's n tokens), end."""
        return f"{self.image_start}{self.image_pad}{self.image_end}"

    def content(self, prompt: str, num_images: int) -> list[dict]:
        """The user turn as chat-template items: text pieces and images, images where the prompt says
        ``<image>`` (else before the text)."""
        content: list[dict] = []
        if prompt.count(IMAGE_MARKER):
            parts = prompt.split(IMAGE_MARKER)
            for i, part in enumerate(parts):
                if part:
                    content.append({"type": "text", "text": part})
                if i < len(parts) - 1:
                    content.append({"type": "image"})
        else:
            content += [{"type": "image"}] * num_images
            content.append({"type": "text", "text": prompt})
        return content

    def chat_string(self, content: list[dict]) -> str:
        """The chat format of one user turn ending in the assistant prefix: the checkpoint's own chat template."""
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        messages.append({"role": "user", "content": content})
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    # ---------------------------------------------------------------- images
    def prepare_image(self, image: Image.Image) -> Image.Image:
        """RGB (alpha composited on white, palettes expanded), optionally resized to the fixed MLLM size."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}")
        image = to_rgb(image)
        if self.image_size is not None:
            image = image.resize((self.image_size, self.image_size), Image.BICUBIC)
        return image

    # ------------------------------------------------------------- one sample
    def encode(self, prompt: str, images: Sequence[Image.Image] = (), answer: str | None = None, prompt_format: str | None = None) -> dict:
        """Tokenise one prompt with its images. Returns ``input_ids`` (list), ``pixel_values``, ``image_grid_thw``.

        With ``answer`` (understanding data) the assistant's answer and end-of-turn token follow the prompt,
        and ``labels`` (list) holds their ids with -100 on every prompt position.
        """
        images = list(images or [])
        text = self.chat_text(prompt, len(images), prompt_format)
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        n_pads = sum(1 for i in ids if i == self.image_pad_id)
        if n_pads != len(images):
            raise ValueError(f"the chat template produced {n_pads} image placeholder(s) for {len(images)} image(s).")
        pixel_values = grid = None
        if images:
            out = self.image_processor(images=[self.prepare_image(im) for im in images], return_tensors="pt")
            pixel_values, grid = out["pixel_values"], out["image_grid_thw"].long()
            counts = (grid.prod(-1) // self.merge_size**2).tolist()
            expanded: list[int] = []
            k = 0
            for i in ids:
                if i == self.image_pad_id:
                    expanded += [self.image_pad_id] * counts[k]
                    k += 1
                else:
                    expanded.append(i)
            ids = expanded
        out = {"input_ids": ids, "pixel_values": pixel_values, "image_grid_thw": grid}
        if answer is not None:
            reply = self.tokenizer(answer + self.end_of_turn, add_special_tokens=False)["input_ids"]
            out["labels"] = [-100] * len(ids) + reply
            out["input_ids"] = ids + reply
        return out

    def collate(self, encoded: Sequence[dict]) -> MLLMInputs:
        """Left-pad a list of :meth:`encode` outputs into one :class:`MLLMInputs`."""
        if not encoded:
            raise ValueError("cannot collate an empty batch")
        length = max(len(e["input_ids"]) for e in encoded)
        ids = torch.full((len(encoded), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.long)
        for r, e in enumerate(encoded):
            n = len(e["input_ids"])
            ids[r, length - n :] = torch.tensor(e["input_ids"], dtype=torch.long)
            mask[r, length - n :] = 1
        labels = None
        if any("labels" in e for e in encoded):
            labels = torch.full((len(encoded), length), -100, dtype=torch.long)
            for r, e in enumerate(encoded):
                if "labels" in e:
                    labels[r, length - len(e["labels"]) :] = torch.tensor(e["labels"], dtype=torch.long)
        pvs = [e["pixel_values"] for e in encoded if e["pixel_values"] is not None]
        grids = [e["image_grid_thw"] for e in encoded if e["image_grid_thw"] is not None]
        return MLLMInputs(ids, mask, torch.cat(pvs) if pvs else None, torch.cat(grids) if grids else None, labels)

    def __call__(
        self, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]] | None = None, prompt_format: str | None = None
    ) -> MLLMInputs:
        """Encode and collate a batch. ``images[i]`` is the (possibly empty) list of images of prompt i."""
        if isinstance(prompts, str):
            raise TypeError("pass a list of prompts, not a single string")
        images = images if images is not None else [[] for _ in prompts]
        if len(images) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} image lists")
        return self.collate([self.encode(p, ims, prompt_format=prompt_format) for p, ims in zip(prompts, images)])

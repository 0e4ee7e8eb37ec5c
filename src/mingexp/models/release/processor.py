"""The released token protocol (``Ming-unify/Ming_Uni/process.py``, ``Templates_native.py``).

* **Tokens.** The tokenizer is ``qwen2_5_llm/``'s, with, in this order, the 15 additional special tokens of
  :data:`ADDITIONAL_SPECIAL_TOKENS` and then the interleave tokens of :data:`INTERLEAVE_TOKENS` added at load
  time (the folder's tokenizer does not hold them; upstream adds them the same way, so the ids match).
* **Image blocks.** ``<image>`` + ``<imagePatch>`` × n + ``</image>``, n = the merged vision tokens; an edit
  puts the image before the instruction as ``<image>\\n {instruction}`` (stripped).
* **Template.** Qwen2's turn strings, written out (the release does not use the tokenizer's chat template)::

      <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n

  Generation then appends ``<image>`` and the query slots; here the query block brings its own ``<image>`` /
  ``</image>`` boundary tokens (``model.queries.boundary=shared``, initialised from these embeddings).
* **Images.** Qwen2-VL's image processor with ``min_pixels = max_pixels = 451584`` (672²), patch, merge and
  temporal patch from ``qwen2_5_vit/config.json``, CLIP mean / std (the processor's defaults, as upstream).
"""

from __future__ import annotations

from pathlib import Path

from mingexp.errors import ConfigError
from mingexp.models.processor import DEFAULT_SYSTEM_PROMPT, IMAGE_MARKER, MLLMProcessor
from mingexp.io.release import release_part, vision_config

ADDITIONAL_SPECIAL_TOKENS = ("[item]", "<html>", "</html>", "<body>", "</body>", "<table>", "</table>", "<tr>", "</tr>", "<td>",
                             "</td>", "<think>", "</think>", "<answer>", "</answer>")
INTERLEAVE_TOKENS = ("<imagePatch>", "<image>", "</image>", "<video>", "</video>", "<gen_imagePatch>", "<gen_image>", "</gen_image>",
                     "<imageHere>", "<end_of_chunk>", "<end_of_audio>", "<audioPatch>", "<audio>", "</audio>", "<gen_audioPatch>",
                     "<gen_audio>", "</gen_audio>", "<audioHere>", "<framePatch>")
IMAGE_PIXELS = 451584  # 672²: MyProcessor's min_pixels = max_pixels
TURN = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def add_protocol_tokens(tokenizer) -> None:
    """Add the release's tokens exactly as upstream's ``init_tokenizer`` does (same calls, same order, same ids)."""
    tokenizer.add_special_tokens({"additional_special_tokens": list(ADDITIONAL_SPECIAL_TOKENS)})
    tokenizer.add_tokens(list(INTERLEAVE_TOKENS), special_tokens=True)


class ReleasedProcessor(MLLMProcessor):
    """:class:`MLLMProcessor` with the released tokens, template and image size (module docstring)."""

    image_pad = "<imagePatch>"
    image_start = "<image>"
    image_end = "</image>"

    def check_tokenizer(self, tokenizer) -> None:
        # The template is the release's own strings: only the image-block tokens must be there.
        missing = [t for t in (self.image_pad, self.image_start, self.image_end) if t not in tokenizer.get_vocab()]
        if missing:
            raise ConfigError(f"the release tokenizer lacks {missing}: add_protocol_tokens adds them at load time.")

    @classmethod
    def from_pretrained(cls, path: str | Path, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, image_pixels: int = IMAGE_PIXELS,
                        image_size: int | None = None, prompt_format: str = "chat") -> "ReleasedProcessor":
        """From the released folder (``model.path``): ``qwen2_5_llm/``'s tokenizer + the protocol tokens, and the
        image processor at ``image_pixels`` with ``qwen2_5_vit/``'s patch geometry."""
        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

        tokenizer = AutoTokenizer.from_pretrained(str(release_part(path, "qwen2_5_llm")))
        add_protocol_tokens(tokenizer)
        vision = vision_config(path)
        image_processor = Qwen2VLImageProcessorPil(
            patch_size=vision.patch_size, merge_size=vision.spatial_merge_size, temporal_patch_size=vision.temporal_patch_size,
            min_pixels=image_pixels, max_pixels=image_pixels,
        )
        return cls(tokenizer, image_processor, system_prompt=system_prompt, image_size=image_size, prompt_format=prompt_format)

    def content(self, prompt: str, num_images: int) -> list[dict]:
        # process.py: an image without a marker goes first as "<image>\n {prompt}", and the prompt is stripped
        if num_images and not prompt.count(IMAGE_MARKER):
            prompt = f"{IMAGE_MARKER}\n" * (num_images - 1) + (f"{IMAGE_MARKER}\n {prompt}" if prompt else f"{IMAGE_MARKER}\n")
        return super().content(prompt.strip() if num_images else prompt, num_images)

    def chat_string(self, content: list[dict]) -> str:
        body = "".join(self.image_block if c["type"] == "image" else c["text"] for c in content)
        return TURN.format(system=self.system_prompt or "", prompt=body)

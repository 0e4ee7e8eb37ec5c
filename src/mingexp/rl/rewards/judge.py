"""A vision-language model as the reward: P(yes) to a question about the image (UniWorld-V2's and BLIP3o-NEXT's MLLM
rewards), by default the model's own frozen MLLM, which every mingexp model already carries.

The question is ``question`` with ``{prompt}`` filled in (and any other ``{key}`` of the prompt's metadata); the
reward is the judge's probability that its answer starts with "yes", renormalised over yes and no
(:func:`mingexp.eval.judge.yes_probability`, one forward pass, no decoding). ``path`` names another judge folder
(a transformers VLM, safetensors only, loaded strictly by :class:`~mingexp.eval.judge.VLMJudge`); null uses the
trained model's MLLM, bound before the first rollout (:meth:`bind`). The MLLM is frozen in mingexp, so its
judgement does not move while the generator learns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
from PIL import Image

from mingexp.errors import ConfigError
from mingexp.eval.judge import Question, VLMJudge, yes_probability
from mingexp.rl.rewards.base import Scores


class JudgeReward:
    """Args: question: the template (``{prompt}`` and metadata keys); path: a judge folder, or None for the model's own
    MLLM; dtype / device: the judge's (by path); batch_size: questions per forward pass; normalise: P(yes | yes or no)."""

    def __init__(self, question: str = "does the image show {prompt}? answer yes or no.", path: str | Path | None = None,
                 dtype: str = "float32", device: str = "cpu", batch_size: int = 16, normalise: bool = True) -> None:
        self.question, self.batch_size, self.normalise = str(question), int(batch_size), bool(normalise)
        self.judge = VLMJudge(path, dtype=dtype, device=device, batch_size=batch_size) if path is not None else None
        self._mllm = None

    def bind(self, model) -> None:
        """The judge is the trained model's frozen MLLM when no ``path`` was given."""
        if self.judge is None:
            self._mllm = model.mllm

    def text(self, prompt: str, meta: Mapping) -> str:
        try:
            return self.question.format(**{**meta, "prompt": prompt})
        except (KeyError, IndexError) as e:
            raise ConfigError(f"grpo reward question {self.question!r} names {e}, which the prompt's metadata does not have.") from None

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str], metadata: Sequence[Mapping]) -> Scores:
        texts = [self.text(p, m) for p, m in zip(prompts, metadata)]
        if self.judge is not None:
            p = self.judge.yes_probability([Question([im], t, images_first=True) for im, t in zip(images, texts)], self.normalise)
        elif self._mllm is not None:
            mllm, out = self._mllm, []
            for i in range(0, len(texts), self.batch_size):
                inputs = mllm.processor(texts[i: i + self.batch_size], [[im] for im in images[i: i + self.batch_size]], prompt_format="chat")
                batch = {"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask, "pixel_values": inputs.pixel_values,
                         "image_grid_thw": inputs.image_grid_thw}
                out.append(yes_probability(mllm.model, mllm.processor.tokenizer, batch, self.normalise))
            p = torch.cat(out) if out else torch.zeros(0)
        else:
            raise ConfigError("JudgeReward has no judge: give reward path=<VLM folder>, or let the GRPO module bind the model's MLLM.")
        return Scores(p.float(), {"p_yes": p.float()})

"""Understanding: exact-match accuracy of the frozen MLLM's answers on held-out questions.

Training never touches the MLLM, so this number must not move during training; it is the check that the
unified model "still answers questions about images" (and, in the toy world, that stage 0 taught it to).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from collections import Counter

from mingexp.eval.base import Example
from mingexp.eval.common import HeldOutEvaluation
from mingexp.eval.metrics import VQAAccuracy, normalize_answer


class VQAEval(HeldOutEvaluation):
    """Accuracy over the first ``n`` questions of held-out vqa shards."""

    name = "vqa"
    task = "vqa"
    nothing = "no readable questions."
    example_labels: tuple[str, ...] = ()  # the cells of each example tile (pair_grid)

    def __init__(self, urls: str | Sequence[str], n: int = 64, max_new_tokens: int = 16) -> None:
        self.urls, self.n, self.max_new_tokens = urls, int(n), int(max_new_tokens)

    def __call__(self, model, out_dir: Path | None = None) -> tuple[dict[str, float], list[Example]]:
        samples = self.samples()
        from tqdm import tqdm

        answers = [model.chat(s.inputs, s.prompt, max_new_tokens=self.max_new_tokens)
                   for s in tqdm(samples, desc=f"{self.name}: questions", disable=not self.progress)]
        return {"accuracy": self.accuracy(answers)}, []

    def accuracy(self, answers) -> float:
        metric = VQAAccuracy()
        metric.update(list(answers), [s.answer for s in self.samples()])
        return float(metric.compute())

    def baselines(self, size: int) -> dict[str, dict[str, float | None]]:
        """Accuracy of always giving the most frequent answer (the floor a model that ignores the image reaches) and
        of the reference answers (the ceiling)."""
        answers = [s.answer for s in self.samples()]
        majority = Counter(normalize_answer(a) for a in answers).most_common(1)[0][0]
        return {"majority_answer": {"accuracy": self.accuracy([majority] * len(answers))}, "truth": {"accuracy": self.accuracy(answers)}}

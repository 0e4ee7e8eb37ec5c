"""The judge path measured where the truth is known: the toy MLLM judging toy-world edits against the exact checker.

A VLM judge on GEdit-Bench or ImgEdit cannot be checked against a ground truth (there is none). On the toy world it
can: the exact edit checker (:func:`mingexp.eval.edit.scene_matches` with the world's detector) says whether an image
shows the target scene. :class:`SceneQuestions` makes a judge of a VLM that was taught the world's questions (the toy
MLLM, stage 0): for the target scene it asks

* ``how many <shape>s are there?`` for every shape of the source or the target (a removed shape: ``zero``);
* ``what colour is the <shape>?`` for every shape the target holds once;
* ``what shape is the <colour> object?`` for every colour the target holds once;

and says the edit succeeded when at least ``min_correct`` of the answers are the target's (the toy MLLM answers single
questions about 65 % right, so a rule of "every answer right" would call almost every image a failure; the record
keeps each kind of question's accuracy per condition, so the rule can be read against them). :func:`agreement` compares its verdicts with the exact
checker's on held-out edits under three conditions: the target image (the checker: success), the unedited source
(failure, as a rule) and, given a run's checkpoint, the model's own edits.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from mingexp.data.shapes.language import NUMBER_WORDS, plural
from mingexp.data.shapes.scene import Scene
from mingexp.eval.judge import Question, VLMJudge
from mingexp.eval.metrics import normalize_answer


class SceneQuestions:
    """A yes/no edit verdict from a VLM's answers to the toy world's questions about the target scene."""

    def __init__(self, min_correct: float = 0.5) -> None:
        self.min_correct = float(min_correct)

    def questions(self, source: Scene, target: Scene) -> list[tuple[str, str]]:
        """``(question, expected answer)`` pairs for the target scene (module docstring)."""
        counts = Counter(o.shape for o in target.objects)
        shapes = sorted({o.shape for o in source.objects} | set(counts))
        qa = [(f"how many {plural(s)} are there?", NUMBER_WORDS.get(counts[s], str(counts[s])) if counts[s] else "zero") for s in shapes]
        qa += [(f"what colour is the {o.shape}?", o.color) for o in target.objects if counts[o.shape] == 1]
        colours = Counter(o.color for o in target.objects)
        qa += [(f"what shape is the {o.color} object?", o.shape) for o in target.objects if colours[o.color] == 1]
        return qa

    def verdicts(self, judge: VLMJudge, images: Sequence[Image.Image], sources: Sequence[Scene], targets: Sequence[Scene],
                 progress: bool = False) -> tuple[list[bool], list[list[tuple[str, str, str]]]]:
        """Per image, the verdict and its ``(question, expected, answer)`` triples."""
        asked, spans = [], []
        for image, source, target in zip(images, sources, targets):
            qa = self.questions(source, target)
            spans.append((len(asked), qa))
            asked += [Question([image], q, True, "") for q, _ in qa]
        answers = judge.ask(asked, progress=progress).texts
        verdicts, records = [], []
        for start, qa in spans:
            got = answers[start: start + len(qa)]
            records.append([(q, e, a) for (q, e), a in zip(qa, got)])
            right = sum(normalize_answer(a) == normalize_answer(e) for (_, e), a in zip(qa, got))
            verdicts.append(right >= self.min_correct * len(qa))
        return verdicts, records


def kind(question: str) -> str:
    return {"how": "count", "what colour": "colour", "what shape": "shape"}[next(k for k in ("how", "what colour", "what shape") if question.startswith(k))]


def agreement(judge: VLMJudge, world: str | None = None, ckpt_path: str | None = None, n: int = 64, seed: int = 0,
              progress: bool = True, min_correct: float = 0.5) -> dict[str, Any]:
    """The toy judge's verdicts against the exact checker's (module docstring): agreement overall, per condition, and the
    confusion counts (judge yes / no × checker yes / no)."""
    from mingexp.eval.common import load_samples
    from mingexp.eval.edit import scene_matches
    from mingexp.eval.geneval.shapes_detector import ShapesDetector

    from mingexp.eval.judge_check import cache_root

    root = Path(world) if world else cache_root() / "shapes" / "v1"
    samples, _ = load_samples(str(root / "heldout" / "edit" / "*.tar"), "edit", 10 * n, "world")
    samples = [s for s in samples if "target_scene" in s.meta and "source_scene" in s.meta]
    samples = [s for s in samples if Scene.from_json(s.meta["target_scene"]).objects]
    samples = sorted(random.Random(seed).sample(samples, min(n, len(samples))), key=lambda s: s.key)
    if not samples:
        raise ValueError(f"world={root}: no held-out toy edits with scenes (write the world: python -m mingexp.data.shapes).")
    sources = [Scene.from_json(s.meta["source_scene"]) for s in samples]
    targets = [Scene.from_json(s.meta["target_scene"]) for s in samples]
    conditions = {"target": [s.target for s in samples], "source": [s.inputs[0] for s in samples]}
    if ckpt_path:
        from mingexp.io.run import load_checkpoint
        from mingexp.models.generation import generate, seed_range

        model, _ = load_checkpoint(ckpt_path)
        conditions["model"] = generate(model, [s.prompt for s in samples], seed_range(seed, len(samples)), [[s.inputs[0]] for s in samples])
    detector = ShapesDetector()
    judge_questions = SceneQuestions(min_correct)
    per: dict[str, Any] = {}
    confusion = Counter()
    examples = []
    for condition, images in conditions.items():
        truth = [scene_matches(detector.detect(im), t, im.width) for im, t in zip(images, targets)]
        said, records = judge_questions.verdicts(judge, images, sources, targets, progress=progress)
        agree = [a == b for a, b in zip(truth, said)]
        right, asked = Counter(), Counter()
        for triples in records:
            for q, e, a in triples:
                asked[kind(q)] += 1
                right[kind(q)] += normalize_answer(a) == normalize_answer(e)
        per[condition] = {"n": len(images), "agreement": sum(agree) / len(agree), "checker_yes": sum(truth), "judge_yes": sum(said),
                          "answers_right": {k: right[k] / asked[k] for k in sorted(asked)}}
        for t, s in zip(truth, said):
            confusion[f"judge {'yes' if s else 'no'} / checker {'yes' if t else 'no'}"] += 1
        examples += [{"condition": condition, "key": s.key, "checker": t, "judge": j, "answers": r}
                     for s, t, j, r in list(zip(samples, truth, said, records))[:3]]
    total = sum(confusion.values())
    agreed = confusion["judge yes / checker yes"] + confusion["judge no / checker no"]
    return {"benchmark": "toy", "items": len(samples), "seed": seed, "min_correct": min_correct, "agreement": agreed / total, "per_condition": per,
            "confusion": dict(confusion), "examples": examples, "judge": judge.identity("toy-scene-questions@1").to_json()}

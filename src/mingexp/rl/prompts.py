"""Training prompts for post-training that are not the test.

A reward tuned on the benchmark's own prompts measures memorisation, not skill (flow_grpo#17: RL-tuned GenEval numbers
are only meaningful next to a check that the model did not learn the benchmark). Every source here yields prompts with
GenEval-schema metadata (``tag``, ``include``, ``exclude``, ``prompt``) so rule-based rewards can score them, and
:class:`PromptSource` refuses the evaluation's prompts:

* :class:`ShapesPrompts` generates prompts over the shapes world's vocabulary in GenEval's phrasing with every object
  coloured ("a photo of two red circles", "a photo of a blue star left of a green square"). The GenEval-Shapes suite
  holds every single-object, two-object, counting and colour prompt of the world, so those phrasings are all test
  prompts; a coloured count, a coloured position or a colour pair the suite does not hold is not. Prompts naming a
  held-out composition (:data:`mingexp.data.shapes.language.HELDOUT_COLOR_SHAPES` / ``HELDOUT_SHAPE_PAIRS``) are
  drawn again: the unseen split stays unseen.
* :class:`MetadataFilePrompts` reads a user's JSONL of GenEval-schema lines (their own vocabulary, e.g. COCO classes).

Both drop every prompt that equals an evaluation prompt exactly or after :func:`mingexp.eval.geneval.contamination.normalize`
(articles, plurals, number words, the "a photo of" frame), unless ``allow_eval_prompts`` (then the run says so in its
name and report). :meth:`PromptSource.contamination` runs the contamination check itself on a draw of the source's
prompts, at the start of a run, and its counts are logged.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from mingexp.errors import ConfigError
from mingexp.eval.geneval.contamination import normalize


class PromptSource:
    """Base: ``draw(rng) -> metadata`` gives one candidate; :meth:`batch` keeps the ones that are not evaluation prompts.

    Args:
        eval_metadata: the evaluation's prompts (``shapes`` = GenEval-Shapes, ``official`` = GenEval's, or a jsonl path).
        allow_eval_prompts: keep evaluation prompts too (``grpo.allow_eval_prompts``; written into the run's name).
        cache_dir: where ``official`` metadata is cached.
    """

    def __init__(self, eval_metadata: str = "shapes", allow_eval_prompts: bool = False, cache_dir: str = ".cache") -> None:
        from mingexp.eval.geneval.contamination import load_prompts

        self.eval_metadata, self.allow_eval_prompts = str(eval_metadata), bool(allow_eval_prompts)
        self.eval_prompts = load_prompts(self.eval_metadata, cache_dir)
        self._exact = {p["prompt"].strip() for p in self.eval_prompts}
        self._normal = {normalize(p["prompt"]) for p in self.eval_prompts}
        self.rejected = 0  # evaluation prompts drawn and dropped

    def draw(self, rng: random.Random) -> dict:
        raise NotImplementedError

    def is_eval_prompt(self, prompt: str) -> bool:
        return prompt.strip() in self._exact or normalize(prompt) in self._normal

    def batch(self, seed: int | str, index: int, n: int, tries: int = 1000) -> list[dict]:
        """Batch ``index`` of ``n`` prompts: a pure function of (seed, index), so a resumed run draws what it would have."""
        rng = random.Random(f"{seed}:{index}")
        out: list[dict] = []
        for _ in range(n * tries):
            if len(out) == n:
                break
            meta = self.draw(rng)
            if not self.allow_eval_prompts and self.is_eval_prompt(meta["prompt"]):
                self.rejected += 1
                continue
            out.append(meta)
        if len(out) < n:
            raise ConfigError(f"the prompt source gave {len(out)} of {n} prompts that are not evaluation prompts in {n * tries} draws: "
                              "its prompts are the evaluation's; give it other prompts (or grpo.allow_eval_prompts=true, said in the report).")
        return out

    def contamination(self, seed: int, n: int = 2048) -> dict:
        """The contamination check (:func:`mingexp.eval.geneval.contamination.check`) on ``n`` prompts this source gives."""
        from mingexp.eval.geneval.contamination import check

        captions = [m["prompt"] for m in self.batch(seed, -1, n)]
        report = check(captions, self.eval_prompts)
        report["distinct_prompts"] = len(set(captions))
        return report


class ShapesPrompts(PromptSource):
    """GenEval-phrased prompts over the shapes world with every object coloured (see the module docstring).

    Args:
        tags: GenEval tags to draw (``counting``, ``position``, ``color_attr``; ``colors``, ``single_object`` and
            ``two_object`` exist too, but the suite holds all of them).
    """

    TAGS = ("counting", "position", "color_attr")

    def __init__(self, tags: Sequence[str] = TAGS, **kwargs) -> None:
        from mingexp.vocab import TAGS

        unknown = sorted(set(tags) - set(TAGS))
        if unknown or not tags:
            raise ConfigError(f"data.source.tags={list(tags)}: use GenEval tags from {list(TAGS)} (unknown: {unknown}).")
        super().__init__(**kwargs)
        self.tags = tuple(tags)

    def draw(self, rng: random.Random) -> dict:
        from mingexp.data.shapes import COLORS
        from mingexp.data.shapes.language import NUMBER_WORDS, plural, prompt_metadata, prompt_split, with_article

        while True:
            meta = prompt_metadata(rng, rng.choice(self.tags))
            include = [{**c, "color": c.get("color") or rng.choice(list(COLORS))} for c in meta["include"]]
            meta = {**meta, "include": include}
            names = [f"{c['color']} {c['class']}" if c["count"] == 1 else f"{NUMBER_WORDS[c['count']]} {c['color']} {plural(c['class'])}"
                     for c in include]
            names = [with_article(n) if c["count"] == 1 else n for n, c in zip(names, include)]
            if meta["tag"] == "position":
                rel = include[1]["position"][0]
                meta["prompt"] = f"a photo of {names[1]} {rel} {names[0]}"
            elif len(names) == 2:
                meta["prompt"] = f"a photo of {names[0]} and {names[1]}"
            else:
                meta["prompt"] = f"a photo of {names[0]}"
            if prompt_split(meta) == "seen":
                return meta


class MetadataFilePrompts(PromptSource):
    """Prompts from a JSONL of GenEval-schema lines (``prompt``, ``tag``, ``include``; ``exclude`` optional), drawn uniformly."""

    def __init__(self, path: str | Path, **kwargs) -> None:
        from mingexp.eval.geneval.metadata import read_jsonl

        path = Path(str(path))
        if not path.is_file():
            raise ConfigError(f"data.source.path={path}: no such file; give a JSONL of GenEval-schema prompts.")
        self.prompts = read_jsonl(path)
        if not self.prompts:
            raise ConfigError(f"data.source.path={path} holds no prompts.")
        super().__init__(**kwargs)

    def draw(self, rng: random.Random) -> dict:
        return dict(rng.choice(self.prompts))


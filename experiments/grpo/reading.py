"""A second reading of a post-trained model's images, by readers the reward did not use (experiments/grpo).

The GRPO run's reward is GenEval's rules over the shapes detector, on training prompts drawn from the world's
vocabulary (none of them a GenEval-Shapes prompt). Reward hacking would show as a reward that climbs while what the
images show does not. This script reads each checkpoint's images twice more:

1. **other seeds**: the GenEval-Shapes suite (299 prompts) with seeds the evaluation never uses (1000 + k), scored by the
   official rules (overall, seen, unseen, per tag): a gain that is only the evaluation seeds' would vanish here;
2. **the toy MLLM's answers** (not the detector): for every suite prompt naming one object of a colour ("a photo of a
   red circle", a colour pair), the frozen stage-0 MLLM is asked "what colour is the <shape>?" of the image, and for
   every counting prompt "how many <shapes> are there?"; the share answered as the prompt says. The same questions on
   renders of the prompts' own scenes give the reader's ceiling.

    python experiments/grpo/reading.py --before outputs/train/runs/<make train>/checkpoints/last.ckpt \
        --after outputs/grpo/runs/<run>/checkpoints/last.ckpt --out outputs/grpo/reading.json
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch


def questions(meta: dict) -> list[tuple[str, str]]:
    """(question, expected answer) pairs the toy MLLM was taught to answer, stated by the prompt."""
    from mingexp.data.shapes.language import NUMBER_WORDS, plural

    include = meta["include"]
    shapes = [c["class"] for c in include]
    out = []
    for c in include:
        if c.get("color") and c["count"] == 1 and shapes.count(c["class"]) == 1:
            out.append((f"what colour is the {c['class']}?", c["color"]))
    if meta["tag"] == "counting":
        c = include[0]
        out.append((f"how many {plural(c['class'])} are there?", NUMBER_WORDS[c["count"]]))
    return out


def read(model, suite: list[dict], images_per_prompt: int, seed: int) -> dict:
    from mingexp.eval.geneval.evaluator import score_tracks
    from mingexp.eval.geneval.rules import evaluate_image
    from mingexp.eval.geneval.shapes_detector import ShapesDetector
    from mingexp.models.generation import generate

    detector = ShapesDetector()
    index = [i for i in range(len(suite)) for _ in range(images_per_prompt)]
    prompts = [suite[i] for i in index]
    seeds = [seed + k for k in range(len(prompts))]
    images = generate(model, [m["prompt"] for m in prompts], seeds, batch_size=64)
    results = [{**evaluate_image(im, detector.detect(im), m, detector.colours), "prompt_index": i} for im, m, i in zip(images, prompts, index)]
    geneval = score_tracks(suite, results)
    asked = [(im, q, a, m["tag"]) for im, m in zip(images, prompts) for q, a in questions(m)]
    return {"geneval_other_seeds": geneval, "mllm_reading": answer(model, asked)}


def answer(model, asked) -> dict:
    correct: dict[str, list[bool]] = {}
    for image, question, expected, tag in asked:
        got = model.chat([image], question, max_new_tokens=4).strip().lower()
        kind = "colour" if question.startswith("what colour") else "count"
        correct.setdefault(kind, []).append(got == expected)
    return {k: {"accuracy": sum(v) / len(v), "questions": len(v)} for k, v in correct.items()}


def main() -> None:
    from mingexp.data.shapes import geneval_shapes_suite, render, scene_for
    from mingexp.io.run import load_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--images-per-prompt", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1000, help="first seed (the evaluation uses 0..3)")
    args = parser.parse_args()
    suite = geneval_shapes_suite(0)
    report = {"seed": args.seed, "images_per_prompt": args.images_per_prompt}
    torch.set_grad_enabled(False)
    for name, ckpt in (("before", args.before), ("after", args.after)):
        model, _ = load_checkpoint(ckpt)
        report[name] = {"checkpoint": str(ckpt), **read(model, suite, args.images_per_prompt, args.seed)}
        scores = report[name]["geneval_other_seeds"]
        print(name, {k: round(v, 3) for k, v in scores.items() if k.endswith("overall")}, json.dumps(report[name]["mllm_reading"]), flush=True)
    # the reader's ceiling: the same questions on renders of each prompt's own scene
    rng = random.Random(0)
    renders = [(render(scene_for(rng, m, 64)), m) for m in suite]
    report["reader_on_renders"] = answer(model, [(im, q, a, m["tag"]) for im, m in renders for q, a in questions(m)])
    print("renders", json.dumps(report["reader_on_renders"]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

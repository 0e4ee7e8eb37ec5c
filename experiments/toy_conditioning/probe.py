"""Toy conditioning probe: how fast does the toy model learn to follow its prompts?

A study script, not part of the framework: it builds the real model from ``conf/`` (``model=toy`` plus any
overrides), trains it on text-to-image only with shapes scenes rendered in-process (the world's caption mix:
GenEval-phrased prompts and full descriptions), and every ``--eval-every`` steps generates one image for each
of the 60 prompts "a photo of a <colour> <shape>" and scores it with the toy world's exact detector:

    colour   the largest detected object has the prompt's colour (chance: 0.10)
    shape    ... the prompt's shape (chance: ~0.17)
    both     ... both
    one      exactly one object was drawn

and, before each evaluation, how much of the prompt the DiT's condition still carries (the 60 prompts'
condition tokens, norms relative to the mean token norm):

    spread   mean distance of a prompt's tokens from the 60 prompts' mean
    cspread  the same for the per-colour means (the part of the spread that names the colour)

``--data single`` trains on single-object scenes captioned "a photo of a <colour> <shape>" only (the
evaluation's own distribution); ``mix`` (default) on the world's t2i mix; ``fixed`` on the same 60 captions,
each with one image (the object in the world's first slot; the fourth round, on the format-3 world, centred
it in a 22-px box of the 64-px canvas): memorisation, not generalisation,
which tells "the DiT cannot draw the shape the condition names" from "it has not yet learned to draw it
anywhere at any size".

``--geneval N`` also scores GenEval-Shapes at every evaluation (N images per prompt of the whole 299-prompt
suite, the official rules and the toy detector, as the main job's end-of-run evaluation with N = 4): the
overall and each tag are printed on a second line.

``--guidance 3 5 7`` scores GenEval-Shapes once more after the last step at each of these guidance scales
(the sampler's only: the trained model is the same).

``--checkpoint <run>/checkpoints/last.ckpt`` trains nothing: it rebuilds that run's model from the run's own
config (as ``mingexp.evaluate`` does; ``--toy-dir`` must hold the MLLM the run used) and scores it once.

``--condition tokens`` is the control that bypasses the MLLM: the connector reads a Gaussian embedding
(std 1) of the caption's last 12 token ids, laid out as the query block (12 tokens, then repeated to the
block's length), frozen unless ``--train-embedding``; the connector and DiT are the model's own. Alignment
must be off for it (``model.align.weight=0``): there are no MLLM query states to align to.

It writes ``<out>/<name>_step<N>.png`` (rows: colours, columns: shapes) and prints one line per evaluation.

    python experiments/toy_conditioning/probe.py --name shift1 --steps 1000 --toy-dir .cache/toy \\
        model.flow.shift=1 model.sampler.shift=1
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from mingexp.data.shapes import COLORS, SHAPES, Scene, ShapeObject, with_article, prompt_metadata, render, scene_for, slot_boxes, t2i_example
from mingexp.eval.geneval.shapes_detector import ShapesDetector
from mingexp.evaluate import load_model
from mingexp.models.generation import generate, seed_range
from mingexp.models.unified import Condition

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
DATA = ("mix", "single", "fixed")


def scenes(rng: random.Random, size: int, n: int, data: str = "mix") -> tuple[list[str], torch.Tensor]:
    """n (caption, image in [-1, 1]) pairs: ``mix`` draws them as the shapes world's t2i split does; ``single``:
    single-object scenes with their GenEval "colors" prompt; ``fixed``: the same captions, the object in the
    first slot (one image per caption)."""
    texts, images = [], []
    for _ in range(n):
        if data == "mix":
            _, scene, caption = t2i_example(rng, 64)
        else:
            metadata = prompt_metadata(rng, "colors")
            caption, (clause,) = metadata["prompt"], metadata["include"]
            x, y, side = slot_boxes(64)[0]
            scene = (scene_for(rng, metadata, 64) if data == "single"
                     else Scene(64, [ShapeObject(clause["class"], clause["color"], x, y, side)]))
        texts.append(caption)
        pixels = np.asarray(render(scene).resize((size, size), Image.BOX)).copy()
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1)
    return texts, torch.stack(images)


def prompt(colour: str, shape: str) -> str:
    """The world's own phrasing of a single-object prompt ("a photo of an orange star"), its article rule included."""
    return f"a photo of {with_article(f'{colour} {shape}')}"


def single_object_accuracy(model, detector: ShapesDetector, path: Path) -> dict[str, float]:
    """Colour / shape / both / one-object rates over the 60 colour × shape prompts (seed 0); saves the grid.

    (Every run in the README was scored with "a photo of a orange ..." where the world writes "an orange":
    6 of the 60 prompts.)
    """
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    images = generate(model, [prompt(c, s) for c, s in pairs], seed_range(0, len(pairs)))
    hits = {"colour": 0, "shape": 0, "both": 0, "one": 0}
    for image, (colour, shape) in zip(images, pairs):
        found = detector.detect(image)
        hits["one"] += len(found) == 1
        if found:
            top = max(found, key=lambda d: d.mask.sum())
            hits["colour"] += top.colour == colour
            hits["shape"] += top.label == shape
            hits["both"] += top.colour == colour and top.label == shape
    rows = [np.concatenate([np.asarray(i) for i in images[r * len(SHAPES):(r + 1) * len(SHAPES)]], 1) for r in range(len(COLORS))]
    grid = np.concatenate(rows, 0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)
    return {k: v / len(pairs) for k, v in hits.items()}


@torch.no_grad()
def condition_spread(model) -> dict[str, float]:
    """How far apart the DiT's condition tokens are across the 60 colour × shape prompts (see docstring)."""
    tokens = model.encode(model.mllm.processor([prompt(c, s) for c in COLORS for s in SHAPES])).tokens.float()
    norm = tokens.norm(dim=-1).mean()
    by_colour = tokens.view(len(COLORS), len(SHAPES), *tokens.shape[1:]).mean(1)
    return {"spread": float((tokens - tokens.mean(0)).norm(dim=-1).mean() / norm),
            "cspread": float((by_colour - by_colour.mean(0)).norm(dim=-1).mean() / norm)}


def geneval_shapes(model, out: Path, images_per_prompt: int) -> dict[str, float]:
    """GenEval-Shapes on the whole suite (``images_per_prompt`` each): overall and the six tags."""
    from mingexp.data.shapes import write_geneval_shapes_metadata
    from mingexp.eval.geneval.evaluator import GenEvalEval

    metadata = write_geneval_shapes_metadata(out / "geneval_shapes_metadata.jsonl")
    values, _ = GenEvalEval(str(metadata), ShapesDetector(), images_per_prompt=images_per_prompt, track="shapes")(model)
    return {k: v for k, v in values.items() if k not in ("missing", "correct_prompts")}


def report(acc: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.3f}" if "spread" in k else f"{k} {v:.2f}" for k, v in acc.items())


class TokenCondition(torch.nn.Module):
    """The control condition: a fixed random embedding of the caption's last ``n`` tokens → the connector.

    Replaces ``model.encode`` (the MLLM and the query block are bypassed). Returns the same
    :class:`~mingexp.models.unified.Condition` the model's path returns, without MLLM states.
    """

    def __init__(self, model, n: int = 12, vocab: int | None = None, trainable: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.model, self.n = [model], n  # a list: not registered as a sub-module
        vocab = vocab or len(model.mllm.processor.tokenizer)
        weight = torch.randn(vocab, model.connector.in_width, generator=torch.Generator().manual_seed(seed))
        self.embedding = torch.nn.Embedding.from_pretrained(weight, freeze=not trainable)

    def forward(self, inputs, update_statistics: bool = True) -> Condition:
        model = self.model[0]
        ids = inputs.input_ids[:, -self.n:]  # left padded: the last n positions end every caption
        x = self.embedding(torch.nn.functional.pad(ids, (self.n - ids.shape[1], 0)) if ids.shape[1] < self.n else ids)
        Q = model.queries.layout.query_index.numel()
        x = x.repeat(1, -(-Q // self.n), 1)[:, :Q]  # the block's length, so every scale gets tokens
        per_scale = model.connector(x, update_statistics)
        return Condition(model.connector.dit_condition(per_scale), per_scale, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--toy-dir", default=".cache/toy", help="where make train put the toy MLLM (mllm/)")
    parser.add_argument("--out", default="outputs/toy_conditioning")
    parser.add_argument("--condition", choices=("model", "tokens"), default="model",
                        help="model: MLLM → queries → connector (the model's path); tokens: the control (see above)")
    parser.add_argument("--train-embedding", action="store_true", help="--condition tokens: learn the embedding too")
    parser.add_argument("--data", choices=DATA, default="mix",
                        help="mix: the world's t2i mix; single: single-object scenes; fixed: one centred image per caption")
    parser.add_argument("--geneval", type=int, default=0, help="also score GenEval-Shapes with this many images per prompt (0: off)")
    parser.add_argument("--guidance", type=float, nargs="*", default=[], help="after the last step, GenEval-Shapes at these guidance scales")
    parser.add_argument("--checkpoint", help="score this run's checkpoint (e.g. outputs/train/runs/<time>/checkpoints/last.ckpt) and exit")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml, e.g. model.flow.shift=1")
    args = parser.parse_args()

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.toy_dir={Path(args.toy_dir).resolve()}", *args.overrides])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.checkpoint:
        cfg.ckpt_path = str(Path(args.checkpoint).resolve())
        model = load_model(cfg)  # the run's own model config, its trained (or EMA) weights, eval mode
        acc = {**condition_spread(model), **single_object_accuracy(model, ShapesDetector(), out / f"{args.name}_checkpoint.png")}
        print(f"{args.name} checkpoint {args.checkpoint} {report(acc)}", flush=True)
        if args.geneval:
            print(f"{args.name} checkpoint geneval_shapes {report(geneval_shapes(model, out, args.geneval))}", flush=True)
        return
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    groups = {k: v for k, v in model.param_groups().items() if v}
    if args.condition == "tokens":
        if model.align is not None:
            parser.error("--condition tokens has no MLLM states to align to: add model.align.weight=0")
        control = TokenCondition(model, trainable=args.train_embedding)
        object.__setattr__(model, "encode", control)  # an instance attribute shadows the method (not a sub-module)
        if args.train_embedding:
            groups["connector"] = groups["connector"] + list(control.parameters())
    # the LightningModule's optimizer: AdamW, a learning rate per component, 100 warmup steps, constant after
    optimizer = torch.optim.AdamW([{"params": v, "lr": float(cfg.module.lr[k])} for k, v in groups.items()], weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 100))
    rng, detector, size = random.Random(0), ShapesDetector(), model.default_size()
    print(args.name, {k: float(cfg.module.lr[k]) for k in groups}, flush=True)

    model.train()
    losses, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        texts, images = scenes(rng, size, args.batch_size, args.data)
        loss = model(model.mllm.processor(texts), images, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for v in groups.values() for p in v], 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.terms["flow"].item())
        if step % args.eval_every == 0 or step == args.steps:
            eval_start = time.perf_counter()
            seconds = eval_start - start
            model.eval()
            acc = {**condition_spread(model), **single_object_accuracy(model, detector, out / f"{args.name}_step{step}.png")}
            print(f"{args.name} step {step} samples {step * args.batch_size} train {seconds:.0f}s flow {np.mean(losses[-100:]):.4f} "
                  + report(acc), flush=True)
            if args.geneval:
                print(f"{args.name} step {step} geneval_shapes {report(geneval_shapes(model, out, args.geneval))}", flush=True)
            model.train()
            start += time.perf_counter() - eval_start  # evaluation time is not training time
    model.eval()
    default = model.sampler.guidance_scale
    for scale in args.guidance:
        model.sampler.guidance_scale = scale
        print(f"{args.name} step {args.steps} guidance {scale:g} geneval_shapes {report(geneval_shapes(model, out, max(1, args.geneval)))}", flush=True)
    model.sampler.guidance_scale = default


if __name__ == "__main__":
    main()

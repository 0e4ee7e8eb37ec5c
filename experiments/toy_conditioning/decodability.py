"""Is the prompt in the query states? Linear decodability of colour and shape from the toy MLLM's query states.

A study script, not part of the framework. It builds the model from ``conf/`` (``model=toy`` plus overrides),
encodes 180 single-object prompts (every colour × shape in three phrasings: "a photo of a red circle",
"a red circle", "a photo of a red circle and a <other colour> <other shape>") into the query block's
hidden states (the connector's input, (84, d) per prompt in the toy preset), and fits ridge classifiers on
the standardised states:

    colour   trained on five shapes, tested on the sixth (leave one shape out; chance 0.10)
    shape    trained on nine colours, tested on the tenth (leave one colour out; chance 0.17)

on the states averaged over the block ("mean") and on all of them ("flat"). It also prints the states'
relative spread (mean distance to the average state / mean norm) and colour's share of that variance.

    python experiments/toy_conditioning/decodability.py --toy-dir .cache/toy
    python experiments/toy_conditioning/decodability.py --toy-dir .cache/toy model.mllm.path=.cache/toy/mllm_base
"""

from __future__ import annotations

import argparse
import itertools
import random
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mingexp.data.shapes import COLORS, SHAPES

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
RIDGE = 10.0  # ridge penalty on standardised features


def prompts(seed: int = 0) -> list[tuple[str, str, str]]:
    """(prompt, colour, shape) for every colour × shape in three phrasings."""
    rng, rows = random.Random(seed), []
    for c, s in itertools.product(COLORS, SHAPES):
        c2, s2 = rng.choice(list(COLORS)), rng.choice([x for x in SHAPES if x != s])
        rows += [(f"a photo of a {c} {s}", c, s), (f"a {c} {s}", c, s), (f"a photo of a {c} {s} and a {c2} {s2}", c, s)]
    return rows


@torch.no_grad()
def query_states(model, texts: list[str]) -> torch.Tensor:
    """The connector's input for each prompt: (N, Σ s², d) MLLM hidden states of the queries (the model's own
    condition path, ``UnifiedModel.encode``, scales in the block's order)."""
    states = model.encode(model.mllm.processor(texts)).mllm
    return torch.cat([states[s] for s in model.queries.layout.scales], dim=1).float()


def held_out_accuracy(features: torch.Tensor, labels: list[int], groups: list[str]) -> float:
    """Ridge classifier on standardised features, each group held out in turn; the pooled test accuracy."""
    y, hits = torch.tensor(labels), 0
    k = int(y.max()) + 1
    for g in sorted(set(groups)):
        train = torch.tensor([x != g for x in groups])
        a = features[train]
        mu, sd = a.mean(0), a.std(0) + 1e-6
        a, b = (a - mu) / sd, (features[~train] - mu) / sd
        targets = torch.nn.functional.one_hot(y[train], k).float()
        # dual form (n ≪ features): W = Aᵀ (A Aᵀ + λI)⁻¹ Y
        w = a.T @ torch.linalg.solve(a @ a.T + RIDGE * torch.eye(a.shape[0]), targets)
        hits += int(((b @ w).argmax(1) == y[~train]).sum())
    return hits / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toy-dir", default=".cache/toy", help="where make train put the toy MLLM (mllm/)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.toy_dir={Path(args.toy_dir).resolve()}", *args.overrides])
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    rows = prompts()
    x = query_states(model, [r[0] for r in rows])
    n = x.shape[0]
    centred = x - x.mean(0)
    spread = centred.norm(dim=-1).mean() / x.norm(dim=-1).mean()
    colour = torch.tensor([list(COLORS).index(r[1]) for r in rows])
    flat = x.reshape(n, -1)
    between = sum(((flat[colour == c].mean(0) - flat.mean(0)) ** 2).sum() * (colour == c).sum() for c in range(len(COLORS))) / n
    share = between / (centred.reshape(n, -1) ** 2).sum(1).mean()
    print(f"prompts {n}, query states {tuple(x.shape[1:])}, relative spread {spread:.3f}, colour's share of the spread's variance {share:.2f}")
    for name, feats in (("mean", x.mean(1)), ("flat", flat)):
        c = held_out_accuracy(feats, colour.tolist(), [r[2] for r in rows])
        s = held_out_accuracy(feats, [list(SHAPES).index(r[2]) for r in rows], [r[1] for r in rows])
        print(f"{name}: colour {c:.2f} (shape held out)  shape {s:.2f} (colour held out)")


if __name__ == "__main__":
    main()

"""``python -m mingexp.eval.judge_check <benchmark folder | toy> judge.path=<VLM folder> [key=value ...]``

A judge is checked before it is trusted. On a sample of a benchmark's items it scores three edits whose order is
known, and reports how often it ranks them in that order and how far apart its scores lie:

* the **reference** edit (a folder of another model's or the ground truth's edits in the benchmark's layout,
  ``reference=``; GEdit-Bench and ImgEdit publish no ground truth), which should score highest;
* the **unedited source** given back as the edit (nothing done), below it;
* an **unrelated image** (another item's source), lowest.

The check is written under ``out=`` (default ``<cache>/judge_checks``) with the judge's identity; every later
evaluation by the same judge on the same benchmark carries the newest one in its ``summary.json``
(:func:`find_check`).

``toy``: the toy world, where the truth is known. The toy MLLM as judge (:class:`~mingexp.eval.toy_judge.SceneQuestions`:
questions about the edited scene, each answer checked) is compared with the exact edit checker on held-out edits: the
target (a success), the unedited source (a failure) and, with ``ckpt_path=``, a model's own edits; the agreement rate is
the judge path measured where the truth is known.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from mingexp.cli_args import REQUIRED, Opt, parse

SPEC = {
    "benchmark": Opt(str, REQUIRED, "the benchmark's folder (GEdit-Bench or ImgEdit as downloaded), or toy", positional=True),
    "judge.path": Opt(str, REQUIRED, "the judge's folder (a transformers VLM, e.g. Qwen2.5-VL-7B-Instruct; toy: the toy MLLM)"),
    "judge.dtype": Opt(str, "bfloat16", "the judge's dtype (float32 on a CPU)"),
    "judge.device": Opt(str, "cpu", "cpu | cuda | auto (sharded across GPUs)"),
    "judge.batch_size": Opt(int, 4, "questions answered together"),
    "judge.max_new_tokens": Opt(int, None, "the answer's budget (default: 512, the benchmarks' own; toy: 16)"),
    "kind": Opt(str, None, "gedit | imgedit (default: read from the folder)"),
    "reference": Opt(str, None, "a folder of reference edits in the benchmark's layout (what should score highest)"),
    "reference_model": Opt(str, None, "GEdit: the model folder name inside reference (default: its only sub-folder)"),
    "prompts": Opt(str, None, "ImgEdit: the benchmark's prompts.json (Benchmark/Basic/prompts.json of its repository)"),
    "languages": Opt(str, "en", "GEdit: en, cn or en,cn"),
    "n": Opt(int, 32, "items checked"),
    "seed": Opt(int, 0, "which items (a seeded sample)"),
    "ckpt_path": Opt(str, None, "toy: a run's checkpoint, whose own edits are checked too"),
    "world": Opt(str, None, "toy: the shapes world folder (default: <cache>/shapes/v1)"),
    "out": Opt(str, None, "where judge checks are kept (default: <cache>/judge_checks)"),
}
CONDITIONS = ("reference", "source", "unrelated")


def cache_root() -> Path:
    """The cache folder outside Hydra: ``$MINGEXP_CACHE`` or ``<$MINGEXP_ROOT or .>/.cache``, as conf/paths/default.yaml."""
    return Path(os.environ.get("MINGEXP_CACHE") or Path(os.environ.get("MINGEXP_ROOT", ".")) / ".cache")


def default_dir() -> Path:
    """``<cache>/judge_checks``."""
    return cache_root() / "judge_checks"


# ------------------------------------------------------------------------------------------------ the record
def save_check(folder: Path, record: dict[str, Any]) -> Path:
    from mingexp.io.records import write_json

    folder.mkdir(parents=True, exist_ok=True)
    judge = record["judge"]
    name = f"{record['benchmark']}-{judge['weights'][:12]}-{judge['prompts'].split('@')[-1][:12]}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(folder / name, record)
    return folder / name


def find_check(folder: Path | None, identity, benchmark: str) -> dict[str, Any] | None:
    """The newest judge check of ``benchmark`` made by the judge ``identity`` (weights, prompts, dtype, decoding), if any."""
    from mingexp.eval.judge import JudgeIdentity

    if folder is None or not Path(folder).is_dir():
        return None
    found = []
    for path in Path(folder).glob(f"{benchmark}-*.json"):
        try:
            record = json.loads(path.read_text())
            if record.get("benchmark") == benchmark and not JudgeIdentity.from_json(record["judge"], str(path)).differences(identity):
                found.append((record.get("time", ""), str(path), record))
        except (ValueError, KeyError, OSError):
            continue
    if not found:
        return None
    _, path, record = max(found)
    return {**{k: record[k] for k in ("time", "items", "order_rate", "pairwise", "spread") if k in record}, "file": path}


# ------------------------------------------------------------------------------------------------ the check
def spread(values: Sequence[float]) -> dict[str, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    m = sum(values) / len(values)
    std = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"n": len(values), "mean": m, "std": std, "min": min(values), "max": max(values)}


def rank(scores: dict[str, list[float | None]], conditions: Sequence[str]) -> dict[str, Any]:
    """How often the conditions' scores come in the given order (strictly), per item and pairwise (ties counted)."""
    n = len(next(iter(scores.values())))
    complete = [i for i in range(n) if all(scores[c][i] is not None for c in conditions)]
    ordered = sum(all(scores[a][i] > scores[b][i] for a, b in zip(conditions, conditions[1:])) for i in complete)
    pairwise = {}
    for k, a in enumerate(conditions):
        for b in conditions[k + 1:]:
            both = [i for i in range(n) if scores[a][i] is not None and scores[b][i] is not None]
            pairwise[f"{a}>{b}"] = {"above": sum(scores[a][i] > scores[b][i] for i in both) / len(both) if both else None,
                                    "tied": sum(scores[a][i] == scores[b][i] for i in both) / len(both) if both else None, "n": len(both)}
    return {"order": " > ".join(conditions), "order_rate": ordered / len(complete) if complete else None, "complete": len(complete),
            "pairwise": pairwise}


def check_benchmark(evaluation, reference: Path | None, n: int, seed: int, progress: bool = True) -> dict[str, Any]:
    """The three conditions of the module docstring on ``n`` seeded items of ``evaluation`` (a judged edit benchmark)."""
    import random

    from mingexp.eval.common import Skips
    from mingexp.pipeline.images import load_image

    items, skips = evaluation.items()
    chosen = sorted(random.Random(seed).sample(range(len(items)), min(n, len(items))))
    picked = [items[i] for i in chosen]
    outputs: dict[str, list] = {}
    missing = Skips()
    if reference is not None:
        pairs = []
        for item in picked:
            try:
                pairs.append((item, load_image(evaluation.output_path(reference, item))))
            except ValueError:
                missing.add("no reference edit", item.key)
                pairs.append((item, None))
        outputs["reference"] = pairs
    outputs["source"] = [(item, load_image(item.source)) for item in picked]
    shift = max(1, len(picked) // 2)  # another item's source: half the sample away
    outputs["unrelated"] = [(item, load_image(picked[(k + shift) % len(picked)].source)) for k, item in enumerate(picked)]
    scores: dict[str, list[float | None]] = {}
    unparsable: dict[str, int] = {}
    for condition, pairs in outputs.items():
        present = [(item, image) for item, image in pairs if image is not None]
        judged, _ = evaluation.judge_outputs(present)
        by_key = {j.item.key: j for j in judged}
        scores[condition] = [(by_key[i.key].scores or {}).get(evaluation.primary) if i.key in by_key else None for i, _ in pairs]
        unparsable[condition] = sum(1 for j in judged if j.scores is None)
    conditions = [c for c in CONDITIONS if c in scores]
    return {"benchmark": evaluation.name, "metric": evaluation.primary, "items": len(picked), "seed": seed,
            **rank(scores, conditions), "spread": {c: spread(scores[c]) for c in conditions}, "unparsable": unparsable,
            "skipped": missing.to_json(), "benchmark_skipped": skips.to_json()}


# ------------------------------------------------------------------------------------------------ the CLI
def build_benchmark(args: dict[str, Any], judge):
    from mingexp.errors import ConfigError

    folder = Path(args["benchmark"]).expanduser()
    kind = args["kind"] or ("imgedit" if (folder / "basic_edit.json").is_file() or list(folder.glob("*/basic_edit.json")) else "gedit")
    common = {"judge": judge, "judge_checks": None}
    if kind == "gedit":
        from mingexp.eval.gedit import GEditBench

        return GEditBench(folder, languages=tuple(args["languages"].split(",")), model_name=args["reference_model"] or "reference", **common)
    if kind == "imgedit":
        from mingexp.eval.imgedit import ImgEditBench

        return ImgEditBench(folder, prompts=args["prompts"], **common)
    raise ConfigError(f"kind={kind}: use gedit or imgedit.")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "eval.judge_check", __doc__.strip().splitlines()[0])
    from mingexp.errors import ConfigError
    from mingexp.eval.judge import VLMJudge

    try:
        judge = VLMJudge(args["judge.path"], dtype=args["judge.dtype"], device=args["judge.device"], batch_size=args["judge.batch_size"],
                         max_new_tokens=args["judge.max_new_tokens"] or (16 if args["benchmark"] == "toy" else 512))
        if args["benchmark"] == "toy":
            from mingexp.eval.toy_judge import agreement

            record = agreement(judge, world=args["world"], ckpt_path=args["ckpt_path"], n=args["n"], seed=args["seed"])
        else:
            evaluation = build_benchmark(args, judge)
            if args["reference"] and args["reference_model"] is None and evaluation.name == "gedit":
                subs = [p.name for p in Path(args["reference"]).iterdir() if p.is_dir()]
                evaluation.model_name = subs[0] if len(subs) == 1 else evaluation.model_name
            record = check_benchmark(evaluation, Path(args["reference"]) if args["reference"] else None, args["n"], args["seed"])
            record["judge"] = evaluation.identity().to_json()
    except (ConfigError, ValueError) as e:
        raise SystemExit(f"judge_check: {e}") from None
    record["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    path = save_check(Path(args["out"]) if args["out"] else default_dir(), record)
    print(json.dumps({k: v for k, v in record.items() if k not in ("judge", "skipped", "benchmark_skipped")}, indent=1, default=str))
    print(f"[mingexp] judge check: {path}")
    return record


if __name__ == "__main__":
    main()

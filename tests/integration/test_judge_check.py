"""The judge check: on the toy world the toy MLLM's verdicts against the exact edit checker; on a benchmark folder the
reference / source / unrelated ranking, saved and then carried by every evaluation the same judge makes."""

from __future__ import annotations

import json
import shutil

from hydra import compose, initialize_config_dir

from mingexp.eval.judge_check import main, rank
from tests.conftest import CONF_DIR
from tests.eval.edit_fixtures import write_gedit


def test_the_toy_judge_is_measured_against_the_exact_checker(tiny_dir, world, tmp_path, capsys):
    record = main(["toy", f"judge.path={tiny_dir / 'mllm'}", "judge.dtype=float32", f"world={world}", "n=4", f"out={tmp_path}"])
    n = record["items"]
    assert 0 < n <= 4
    target, source = record["per_condition"]["target"], record["per_condition"]["source"]
    assert target["checker_yes"] == n  # the exact checker sees each target scene in the target image
    assert sum(record["confusion"].values()) == 2 * n
    agreed = record["confusion"].get("judge yes / checker yes", 0) + record["confusion"].get("judge no / checker no", 0)
    assert record["agreement"] == agreed / (2 * n)
    assert target["agreement"] == target["judge_yes"] / n  # on targets, agreeing is saying yes
    assert set(target["answers_right"]) <= {"count", "colour", "shape"} and all(0 <= v <= 1 for v in target["answers_right"].values())
    assert 0 <= source["agreement"] <= 1
    saved = list(tmp_path.glob("toy-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["agreement"] == record["agreement"]
    assert str(saved[0]) in capsys.readouterr().out


def test_rank_counts_the_order_and_each_pair():
    scores = {"reference": [9.0, 5.0, None, 7.0], "source": [3.0, 5.0, 2.0, 8.0], "unrelated": [1.0, 1.0, 1.0, 0.0]}
    ranked = rank(scores, ("reference", "source", "unrelated"))
    assert ranked["complete"] == 3 and ranked["order_rate"] == 1 / 3  # item 0 only: item 1 ties, item 3 inverts
    assert ranked["pairwise"]["reference>source"] == {"above": 1 / 3, "tied": 1 / 3, "n": 3}
    assert ranked["pairwise"]["source>unrelated"] == {"above": 1.0, "tied": 0.0, "n": 4}


def test_a_benchmark_check_is_saved_and_carried_by_the_next_evaluation(tiny_dir, tmp_path):
    from mingexp.evaluate import evaluate

    bench = tmp_path / "bench"
    write_gedit(bench, per_group=1)
    # a reference model's edits in the official layout (here: each source given back, the first item without an edit)
    from mingexp.pipeline.images import load_image
    from mingexp.eval.gedit import GEditBench
    from mingexp.eval.judge import VLMJudge

    reference = tmp_path / "reference"
    items, _ = GEditBench(bench, VLMJudge(tiny_dir / "mllm", dtype="float32"), languages=("en",)).items()
    assert len(items) == 3
    for item in items[1:]:
        path = reference / "ref" / "fullset" / item.group / item.language / f"{item.key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        load_image(item.source).save(path)
    checks = tmp_path / "checks"
    record = main([str(bench), f"judge.path={tiny_dir / 'mllm'}", "judge.dtype=float32", "judge.max_new_tokens=6", f"reference={reference}",
                   "n=3", f"out={checks}"])
    assert record["benchmark"] == "gedit" and record["metric"] == "O" and record["items"] == 3
    assert record["order"] == "reference > source > unrelated"
    assert set(record["spread"]) == {"reference", "source", "unrelated"}
    assert all(0 <= record["unparsable"][c] <= 3 for c in record["spread"])  # the tiny judge's noise: counted, never a score
    assert record["skipped"]["no reference edit"] == {"count": 1, "e.g.": [items[0].key]}
    assert record["pairwise"]["source>unrelated"]["n"] + record["unparsable"]["source"] >= 3 - record["unparsable"]["unrelated"]
    saved = next(checks.glob("gedit-*.json"))
    # the next evaluation with the same judge carries it; another dtype (another judge) does not
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        def cfg(out, *extra):
            return compose("evaluate", overrides=[f"paths.toy_dir={tiny_dir}", f"paths.root_dir={out}", f"out_dir={out}", "+eval=gedit",
                                                  f"eval.path={bench}", f"eval.judge.path={tiny_dir / 'mllm'}", "eval.judge.device=cpu",
                                                  "eval.judge.max_new_tokens=6", f"eval.judge_checks={checks}", f"score_only={reference}",
                                                  *extra])

        same = evaluate(cfg(tmp_path / "same", "eval.judge.dtype=float32"))
        other = evaluate(cfg(tmp_path / "other", "eval.judge.dtype=bfloat16"))
    assert same["summary"]["judge_check"]["file"] == str(saved)
    assert same["summary"]["judge_check"]["items"] == 3
    assert other["summary"]["judge_check"] is None
    shutil.rmtree(checks)

"""GEdit-Bench with VIEScore: the parser against the official reader's cases, the statistics against a hand computation,
the prompts byte for byte, and the benchmark end to end (official layout, CSVs, skipped rows) with a tiny real judge."""

from __future__ import annotations

import csv
import hashlib
import json
import math

import pytest
from hydra import compose, initialize_config_dir

from mingexp.eval.edit_bench import EditItem, Judged
from mingexp.eval.gedit import CSV_COLUMNS, item_scores, parse_viescore, statistics, summary_table, viescore_prompts
from tests.conftest import CONF_DIR
from tests.eval.edit_fixtures import GEDIT_GROUPS, write_gedit


@pytest.mark.parametrize("answer, scores", [
    ('{"score" : [7, 3], "reasoning" : "the sky is blue"}', [7, 3]),
    ('Sure.\n{\n"score" : [8,\n 9],\n"reasoning" : "ok"\n} done', [8, 9]),  # the outermost braces, newlines dropped
    ('||V^=^V||{"score": [5, 6]}||V^=^V||', [5, 6]),  # the delimited block
    ("[4, 5]", [4, 5]),  # a bare list
    ("6", [6]),  # a lone integer
    ('{score: [2, 10], reasoning: "unquoted keys"}', [2, 10]),  # what fix_json recovers
    ('{"score": 7, "reasoning": "x"}', [7]),  # a single number is wrapped
])
def test_the_answer_is_read_as_the_official_reader_reads_it(answer, scores):
    assert parse_viescore(answer) == scores


@pytest.mark.parametrize("answer, why", [
    ("I cannot judge this image.", "no JSON object"),
    ('{"reasoning": "no score"}', "no 'score'"),
    ('{"score": [11, 3]}', "outside 0–10"),
    ('{"score": ["high", "low"]}', "not a list of numbers"),
    ("", "no JSON object"),
])
def test_an_answer_that_does_not_parse_is_a_named_error_never_a_score(answer, why):
    with pytest.raises(ValueError, match=why):
        parse_viescore(answer)


def test_sc_and_pq_are_minima_and_o_their_geometric_mean():
    scores = item_scores('{"score": [8, 2]}', '{"score": [9, 5]}')
    assert scores == {"SC": 2.0, "PQ": 5.0, "O": math.sqrt(10.0)}
    with pytest.raises(ValueError, match="^PQ: "):
        item_scores('{"score": [8, 2]}', "no")


def test_the_prompts_are_viescores_byte_for_byte():
    """The digests of the templates as GEdit-Bench assembles them (VIEScore's text, MIT: eval/prompts/)."""
    prompts = viescore_prompts()
    assert hashlib.sha256(prompts["sc"].encode()).hexdigest() == "8f529562c2f89f8db51a3f7cc4d487686f676909c21010b67b0e65ec78150de5"
    assert hashlib.sha256(prompts["pq"].encode()).hexdigest() == "2473ff2c7406e06545c5c039ceb039ff2604ebacf150868a48f0bf07c9e733b0"
    assert prompts["sc"].count("<instruction>") == 1 and "<instruction>" not in prompts["pq"]


def judged(key, group, language, sc, pq, intersection=False):
    item = EditItem(key, group, "x", b"", language=language, extra={"intersection": intersection})
    return Judged(item, {"SC": sc, "PQ": pq, "O": math.sqrt(sc * pq)}, [])


def test_statistics_are_the_unweighted_mean_of_the_group_means_of_per_item_o():
    rows = [judged("a", "color_alter", "en", 4, 9, True), judged("b", "color_alter", "en", 1, 1),  # O: 6, 1
            judged("c", "subject-add", "en", 9, 4),                                                # O: 6
            judged("d", "subject-add", "cn", 2, 8, True)]                                           # O: 4
    stats = statistics(rows)
    assert stats["en/color_alter/O"] == pytest.approx(3.5) and stats["en/color_alter/SC"] == pytest.approx(2.5)
    assert stats["en/O"] == pytest.approx((3.5 + 6) / 2)  # not (6 + 1 + 6) / 3: groups weigh alike
    assert stats["en/SC"] == pytest.approx((2.5 + 9) / 2) and stats["en/PQ"] == pytest.approx((5 + 4) / 2)
    assert stats["en/intersection/O"] == pytest.approx(6.0) and stats["en/intersection/groups"] == 1
    assert stats["cn/O"] == pytest.approx(4.0) and stats["overall"] == stats["en/O"]
    table = summary_table(stats).splitlines()
    assert table[0] == "| en | SC | PQ | O |" and "| color_alter | 2.500 | 5.000 | 3.500 |" in table
    assert "| **average** | 5.750 | 4.500 | 4.750 |" in table and "| intersection average | 4.000 | 9.000 | 6.000 |" in table
    assert "| cn | SC | PQ | O |" in table and "| subject-add | 2.000 | 8.000 | 4.000 |" in table


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gedit")
    return folder, write_gedit(folder)


def compose_gedit(tiny_dir, out, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("evaluate", overrides=[f"paths.toy_dir={tiny_dir}", f"paths.root_dir={out}", f"out_dir={out}", "+eval=gedit",
                                              f"eval.judge.path={tiny_dir / 'mllm'}", "eval.judge.dtype=float32", "eval.judge.device=cpu",
                                              "eval.judge.max_new_tokens=6", "eval.steps=2", "eval.batch_size=4",
                                              f"eval.judge_checks={out / 'checks'}", *overrides])


def test_gedit_end_to_end_official_layout_csvs_and_skips(tiny_dir, benchmark, tmp_path):
    """Generation + judging with the tiny Qwen2.5-VL as judge (its scores mean nothing; the plumbing is exact)."""
    from mingexp.evaluate import evaluate

    folder, written = benchmark
    result = evaluate(compose_gedit(tiny_dir, tmp_path, f"eval.path={folder}", "eval.languages=[en,cn]"))
    root = tmp_path / "gedit"
    keys = written["good"]["en"] + written["good"]["cn"]
    for language in ("en", "cn"):
        for key in written["good"][language]:
            group = next(g for g in GEDIT_GROUPS if key.startswith(g[:4]))
            layout = root / "mingexp" / "fullset" / group / language
            assert (layout / f"{key}.png").is_file() and (layout / f"{key}_SRCIMG.png").is_file()
    seeds = [json.loads(line)["seed"] for line in (root / "generation.jsonl").read_text().splitlines()]
    assert seeds == list(range(len(keys)))  # item i from seed 0 + i, recorded
    summary = result["summary"]
    assert summary["skipped"] == {f"benchmark: {reason}": {"count": 1, "e.g.": [key if reason != "unreadable input_image" else
                                                                                     summary["skipped"][f"benchmark: {reason}"]["e.g."][0]]}
                                  for reason, key in written["bad"].items()}
    assert summary["partial"] is True and summary["covers"].endswith(f"of {len(keys) + len(written['bad'])} items")
    assert result["items"] == len(keys) and result["judged"] + result["unparsable"] == len(keys)
    judgements = [json.loads(line) for line in (root / "gedit_judgements.jsonl").read_text().splitlines()]
    assert len(judgements) == len(keys) and all(len(j["answers"]) == 2 for j in judgements)  # SC and PQ per item
    assert len(summary["unparsable_answers"]) == min(20, int(result["unparsable"]))  # counted and shown, never a silent 0
    assert summary["judge"]["path"] == str((tiny_dir / "mllm").resolve()) and summary["judge"]["prompts"].startswith("viescore-tie@")
    with open(root / "mingexp" / "local_judge" / "eval_results_new" / "mingexp_color_alter_gpt_score.csv") as f:
        assert tuple(next(csv.reader(f))) == CSV_COLUMNS  # the official statistics script's columns, sementics_score included
    # score_only: the same folder scored again gives the same answers (greedy, one judge)
    again = evaluate(compose_gedit(tiny_dir, tmp_path / "again", f"eval.path={folder}", "eval.languages=[en,cn]", f"score_only={root}"))
    assert (tmp_path / "again" / "gedit_judgements.jsonl").read_text() == (root / "gedit_judgements.jsonl").read_text()
    assert again["unparsable"] == result["unparsable"]
    table = (tmp_path / "again" / "gedit_table.md").read_text()
    assert table.startswith(f"# gedit ({summary['covers']}, partial; {int(result['unparsable'])} unparsable answer(s))")


def test_a_folder_without_the_benchmarks_columns_or_files_is_named(tiny_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mingexp.errors import ConfigError
    from mingexp.eval.gedit import GEditBench
    from mingexp.eval.judge import VLMJudge

    judge = VLMJudge(tiny_dir / "mllm", dtype="float32")
    with pytest.raises(ConfigError, match="no .parquet or .arrow files.*huggingface-cli download stepfun-ai/GEdit-Bench"):
        GEditBench(tmp_path, judge).items()
    pq.write_table(pa.table({"key": ["a"], "instruction": ["x"]}), tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match=r"lack the column\(s\) \['input_image', 'instruction_language', 'task_type'\]"):
        GEditBench(tmp_path, judge).items()

"""ImgEdit-Bench's basic suite: the rubric reader against the official step1 reading, the statistics against a hand
computation, the prompts file's errors, and the benchmark end to end (layout, the official score files, skipped
entries) with a tiny real judge."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from mingexp.errors import ConfigError
from mingexp.eval.edit_bench import EditItem, Judged
from mingexp.eval.imgedit import OFFICIAL, TYPES, load_prompts, parse_rubric, statistics, summary_table
from tests.conftest import CONF_DIR
from tests.eval.edit_fixtures import write_imgedit


def official_step1(text: str) -> float | None:
    """``step1_get_avgscore.py``'s loop, transcribed: ``split(': ')``, ``isdigit``, the mean rounded to 2 decimals."""
    scores = []
    for line in text.split("\n"):
        parts = line.strip().split(": ")
        if len(parts) == 2 and parts[1].isdigit():
            scores.append(int(parts[1]))
    return round(sum(scores) / len(scores), 2) if scores else None


@pytest.mark.parametrize("answer", [
    "Brief reasoning: the cat was added.\nPrompt Compliance: 4\nVisual Naturalness: 3\nPhysical & Detail Integrity: 5",
    "Prompt Compliance: 4\nVisual Naturalness: 4\nPhysical & Detail Integrity: 5",  # 4.33
    "  Prompt Compliance: 2  \nVisual Naturalness: 2.5\nPhysical & Detail Integrity: 1",  # 2.5 is no digit string: skipped
    "Score: 3",
])
def test_the_rubric_is_read_as_the_official_step1_reads_it(answer):
    assert parse_rubric(answer) == official_step1(answer)


@pytest.mark.parametrize("answer, why", [
    ("The edit looks great, I would give it a five.", "no '<criterion>: <digits>' line"),
    ("Prompt Compliance: 4\nVisual Naturalness: 7", "outside 1–5"),
    ("Prompt Compliance: four", "no '<criterion>: <digits>' line"),
])
def test_an_answer_without_a_score_is_a_named_error_never_a_score(answer, why):
    with pytest.raises(ValueError, match=why):
        parse_rubric(answer)


def test_statistics_are_type_means_rounded_and_their_unweighted_mean():
    def judged(edit_type, score):
        return Judged(EditItem(f"{edit_type}{score}", edit_type, "x", b""), {"score": score}, [])

    items = [judged("add", 4.33), judged("add", 3.0), judged("add", 5.0), judged("remove", 2.67), judged("style", 1.0), judged("style", 2.0)]
    stats = statistics(items)
    add, remove, style = round((4.33 + 3.0 + 5.0) / 3, 2), 2.67, 1.5  # 4.11
    assert stats == pytest.approx({"type/add": add, "type/remove": remove, "type/style": style, "overall": (add + remove + style) / 3, "types": 3})
    assert summary_table(stats).splitlines() == ["| edit type | score |", "|---|---:|", "| add | 4.11 |", "| remove | 2.67 |",
                                                 "| style | 1.50 |", "| **overall** (3 types) | 2.76 |"]


def test_prompts_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="eval.prompts is not set.*git clone https://github.com/PKU-YuanGroup/ImgEdit"):
        load_prompts(None)
    with pytest.raises(ConfigError, match=f"eval.prompts={tmp_path / 'no.json'}: no such file"):
        load_prompts(tmp_path / "no.json")
    file = tmp_path / "prompts.json"
    file.write_text(json.dumps({t: f"grade {t}: <edit_prompt>" for t in TYPES if t != "action"} | {"style": "no placeholder"}))
    with pytest.raises(ConfigError, match=r"no template for \['action'\]; no <edit_prompt> in \['style'\]"):
        load_prompts(file)
    file.write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        load_prompts(file)
    file.write_text(json.dumps({t: f"grade {t}: <edit_prompt>" for t in TYPES}))
    prompts, name = load_prompts(file)
    assert list(prompts) == list(TYPES) and name == "imgedit-custom"  # not the official texts (pinned by digest)
    assert set(OFFICIAL) <= set(TYPES)


def compose_imgedit(tiny_dir, out, written, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("evaluate", overrides=[f"paths.toy_dir={tiny_dir}", f"paths.root_dir={out}", f"out_dir={out}", "+eval=imgedit",
                                              f"eval.path={written['path']}", f"eval.prompts={written['prompts']}",
                                              f"eval.judge.path={tiny_dir / 'mllm'}", "eval.judge.dtype=float32", "eval.judge.device=cpu",
                                              "eval.judge.max_new_tokens=8", "eval.steps=2", "eval.batch_size=5",
                                              f"eval.judge_checks={out / 'checks'}", *overrides])


def test_imgedit_end_to_end_layout_official_files_and_skips(tiny_dir, tmp_path):
    """Generation + judging with the tiny Qwen2.5-VL as judge: its answers mean nothing, the plumbing is exact."""
    from mingexp.evaluate import evaluate

    written = write_imgedit(tmp_path / "bench")
    result = evaluate(compose_imgedit(tiny_dir, tmp_path / "out", written))
    root = tmp_path / "out" / "imgedit"
    assert sorted(p.stem for p in root.glob("*.png")) == sorted(written["good"])  # <key>.png: what basic_bench.py writes
    records = [json.loads(line) for line in (root / "generation.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == list(range(len(written["good"])))
    summary = result["summary"]
    assert {k.removeprefix("benchmark: "): v["e.g."] for k, v in summary["skipped"].items()} == {
        reason: [key] if reason != "missing or unreadable image" else summary["skipped"][f"benchmark: {reason}"]["e.g."]
        for reason, key in written["bad"].items()}
    assert summary["skipped"]["benchmark: missing or unreadable image"]["e.g."][0].startswith("901 ")
    assert summary["partial"] is True and summary["covers"].endswith(f"of {len(written['good']) + len(written['bad'])} items")
    assert summary["judge"]["prompts"].startswith("imgedit-custom@")
    judgements = [json.loads(line) for line in (root / "imgedit_judgements.jsonl").read_text().splitlines()]
    assert len(judgements) == len(written["good"]) and result["judged"] + result["unparsable"] == len(written["good"])
    assert len(summary["unparsable_answers"]) == int(result["unparsable"])  # counted and shown with their text
    # the official files: result.json (answers step1 reads), average_score.json, typescore.json, consistent by hand
    answers = json.loads((root / "result.json").read_text())
    averages = json.loads((root / "average_score.json").read_text())
    assert set(answers) == set(averages) == {j["key"] for j in judgements if j["scores"] is not None}
    assert all(official_step1(answers[k]) == averages[k] for k in answers)
    types = json.loads((root / "typescore.json").read_text())
    assert {f"type/{t}": v for t, v in types.items()} == {k: result[k] for k in result if k.startswith("type/")}
    assert (tmp_path / "out" / "imgedit" / "imgedit_table.md").read_text().splitlines()[0].startswith(f"# imgedit ({summary['covers']}, partial")


def test_imgedit_score_only_scores_the_official_files_of_a_folder(tiny_dir, tmp_path):
    """score_only with edits that are copies of the sources: every answer and the summary come from that folder."""
    import shutil

    from mingexp.evaluate import evaluate

    written = write_imgedit(tmp_path / "bench")
    entries = json.loads((written["path"] / "basic_edit.json").read_text())
    folder = tmp_path / "edits"
    folder.mkdir()
    for key in written["good"][:-1]:  # one edit missing: skipped, counted, named
        shutil.copy(written["path"] / entries[key]["id"], folder / f"{key}.png")
    result = evaluate(compose_imgedit(tiny_dir, tmp_path / "out", written, f"score_only={folder}"))
    assert result["score_only"] == str(folder)
    assert result["summary"]["skipped"]["no output in the layout"]["count"] == 1
    assert result["summary"]["skipped"]["no output in the layout"]["e.g."][0].startswith(written["good"][-1])
    assert result["judged"] + result["unparsable"] == len(written["good"]) - 1
    assert (tmp_path / "out" / "imgedit_judgements.jsonl").is_file()


def test_a_folder_without_the_edit_list_names_eval_path(tiny_dir, tmp_path):
    from mingexp.eval.imgedit import ImgEditBench
    from mingexp.eval.judge import VLMJudge

    written = write_imgedit(tmp_path / "bench")
    with pytest.raises(ConfigError, match=f"eval.path={tmp_path}: no basic_edit.json or singleturn.json"):
        ImgEditBench(tmp_path, VLMJudge(tiny_dir / "mllm", dtype="float32"), prompts=written["prompts"]).items()

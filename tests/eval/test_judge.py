"""The local judge: refused before any generation when it is no VLM or pickled, deterministic, identified by its
weights / prompts / dtype, and two results compared only under one judge (mingexp.eval.compare)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mingexp.errors import ConfigError
from mingexp.eval.judge import JudgeIdentity, Question, VLMJudge, same_judge, text_digest, weights_digest


def test_a_folder_that_is_no_vlm_is_refused_by_name(tiny_dir):
    with pytest.raises(ConfigError, match=r"eval.judge.path=.*clip: its config is CLIPConfig .*not a vision-language model"):
        VLMJudge(tiny_dir / "clip", dtype="float32")


def test_a_pickled_judge_is_refused_before_anything_is_loaded(tiny_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_dir / "mllm", folder)
    for file in folder.glob("*.safetensors"):
        torch.save(load_file(file), folder / "pytorch_model.bin")
        file.unlink()
    with pytest.raises(ConfigError, match="safetensors"):
        VLMJudge(folder, dtype="float32")


def test_evaluate_refuses_a_bad_judge_before_loading_the_model(tiny_dir, tmp_path):
    """The judge is checked when the evaluation is built, before the checkpoint is read: a missing ckpt_path is never reached."""
    from hydra import compose, initialize_config_dir

    from mingexp.evaluate import evaluate
    from tests.conftest import CONF_DIR
    from tests.eval.edit_fixtures import write_gedit

    write_gedit(tmp_path / "bench", per_group=1)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"paths.toy_dir={tiny_dir}", f"paths.root_dir={tmp_path}", f"out_dir={tmp_path}", "+eval=gedit",
                                             f"eval.path={tmp_path / 'bench'}", f"eval.judge.path={tiny_dir / 'clip'}",
                                             f"ckpt_path={tmp_path / 'missing.ckpt'}"])
    with pytest.raises(ConfigError, match="not a vision-language model"):
        evaluate(cfg)
    assert not (tmp_path / "gedit").exists()  # nothing generated


def test_greedy_answers_are_deterministic_and_batched_like_single(tiny_dir):
    judge = VLMJudge(tiny_dir / "mllm", dtype="float32", max_new_tokens=5, batch_size=3)
    image = Image.new("RGB", (40, 32), (200, 30, 30))
    questions = [Question([image], "what colour is the square?"), Question([image, image], "compare the two images", True),
                 Question([image], "rate the edit", False)]
    first, again = judge.ask(questions).texts, judge.ask(questions).texts
    assert first == again and len(first) == 3
    one_by_one = VLMJudge(tiny_dir / "mllm", dtype="float32", max_new_tokens=5, batch_size=1).ask(questions).texts
    assert one_by_one == first  # left padding: a batch answers as each question alone


def test_the_identity_follows_the_weights_the_prompts_and_the_dtype(tiny_dir, tmp_path):
    folder = tmp_path / "judge"
    shutil.copytree(tiny_dir / "mllm", folder)
    judge = VLMJudge(folder, dtype="float32")
    a = judge.identity(f"viescore-tie@{text_digest({'sc': 'x', 'pq': 'y'})}")
    assert a.weights == weights_digest(tiny_dir / "mllm")  # the same bytes elsewhere: the same judge
    assert not a.differences(VLMJudge(tiny_dir / "mllm", dtype="float32").identity(a.prompts))
    assert text_digest({"pq": "y", "sc": "x"}) == text_digest({"sc": "x", "pq": "y"}) != text_digest({"sc": "x", "pq": "z"})
    # one changed tensor: another judge
    file = next(folder.glob("*.safetensors"))
    tensors = load_file(file)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    from safetensors.torch import save_file

    save_file(tensors, file, metadata={"format": "pt"})
    b = VLMJudge(folder, dtype="bfloat16").identity(f"viescore-tie@{text_digest({'sc': 'x', 'pq': 'z'})}")
    with pytest.raises(ConfigError, match=r"different judges \(weights: .*; prompts: .*; dtype: float32 vs bfloat16\)"):
        same_judge(a, b)
    assert JudgeIdentity.from_json(a.to_json()) == a
    with pytest.raises(ConfigError, match="no judge identity"):
        JudgeIdentity.from_json({"path": "x"}, "r.json")


def _result(path, values, judge: dict) -> str:
    path.write_text(json.dumps({"evaluation": "gedit", **values, "summary": {"evaluation": "gedit", "values": values, "judge": judge}}))
    return str(path)


def test_compare_shows_two_results_under_one_judge_and_refuses_two_judges(tmp_path, capsys):
    from mingexp.eval.compare import main

    judge = {"path": "/a/judge", "weights": "w" * 64, "prompts": "viescore-tie@p", "dtype": "bfloat16", "decoding": "greedy"}
    a = _result(tmp_path / "a.json", {"en/avg/O": 5.0, "items": 10.0}, judge)
    b = _result(tmp_path / "b.json", {"en/avg/O": 6.5, "items": 10.0}, {**judge, "path": "/moved/judge"})  # same weights, moved
    table = main([a, b])
    assert table["en/avg/O"] == {"a": 5.0, "b": 6.5, "b-a": 1.5}
    assert "en/avg/O" in capsys.readouterr().out
    c = _result(tmp_path / "c.json", {"en/avg/O": 7.0}, {**judge, "dtype": "float32"})
    with pytest.raises(SystemExit, match="different judges.*dtype: bfloat16 vs float32"):
        main([a, c])
    (tmp_path / "plain.json").write_text(json.dumps({"evaluation": "gedit", "x": 1.0}))
    with pytest.raises(SystemExit, match="no judge identity"):
        main([a, str(tmp_path / "plain.json")])

"""MagicBrush: the metrics equal their definitions, the official pairing, the toy layout, a tiny model end to end,
bad input skipped and counted, and score-only through `mingexp.evaluate`."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from mingexp.errors import ConfigError
from mingexp.eval.magicbrush import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MagicBrushEval,
    MeanCosine,
    MeanL1,
    generated_name,
    official_all_turns,
    official_final_turn,
    pair_l1,
    read_magicbrush,
)
from tests.conftest import CONF_DIR, build

GT_SIZE = 40


def solid(colour, size=GT_SIZE) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def pattern(seed: int, size: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size, size, 3), dtype=np.uint8))


def write_test_set(root: Path, sessions: dict[str, list[tuple[str, Image.Image, str]]], inputs: dict[str, Image.Image]) -> Path:
    """A MagicBrush test folder: ``sessions[img_id]`` = [(instruction, target image, local caption)] per turn."""
    edit_sessions, local = {}, {}
    for img_id, turns in sessions.items():
        folder = root / "images" / img_id
        folder.mkdir(parents=True)
        inputs[img_id].save(folder / f"{img_id}-input.png")
        names = [f"{img_id}-input.png"]
        edit_sessions[img_id], local[img_id] = [], {}
        for t, (instruction, target, caption) in enumerate(turns, start=1):
            names.append(f"{img_id}-output{t}.png")
            target.save(folder / names[-1])
            solid((255, 255, 255)).save(folder / f"{img_id}-mask{t}.png")
            edit_sessions[img_id].append({"input": names[-2], "mask": f"{img_id}-mask{t}.png", "output": names[-1], "instruction": instruction})
            local[img_id][names[-1]] = caption
    (root / "edit_sessions.json").write_text(json.dumps(edit_sessions))
    (root / "local_descriptions.json").write_text(json.dumps(local))
    return root


# Two sessions with known pixels: 101 has one turn, 202 two.
GT = {
    "101": [("make it red", solid((200, 0, 0)), "a red square")],
    "202": [("make it green", solid((0, 200, 0)), "a green square"), ("make it blue", solid((0, 0, 200)), "a blue square")],
}
INPUTS = {"101": solid((100, 100, 100)), "202": solid((50, 50, 50))}
# What the "model" wrote (the official names), at another size than the targets (resized to them for L1).
GENERATED = {
    "101": {"101_1.png": solid((190, 10, 0), 16)},
    "202": {"202_1.png": solid((0, 180, 0), 16), "202_iter_2.png": solid((0, 0, 100), 16), "202_inde_2.png": solid((0, 0, 220), 16)},
}


def l1_by_hand(a, b) -> float:
    return sum(abs(x - y) for x, y in zip(a, b)) / 3 / 255


@pytest.fixture(scope="module")
def encoders(tiny_dir) -> tuple[Path, Path]:
    return tiny_dir / "clip", tiny_dir / "dino"


@pytest.fixture
def hand(tmp_path, encoders):
    gt = write_test_set(tmp_path / "test", GT, INPUTS)
    out = tmp_path / "generated"
    for img_id, files in GENERATED.items():
        (out / img_id).mkdir(parents=True)
        for name, image in files.items():
            image.save(out / img_id / name)
    return gt, out, MagicBrushEval(gt, *encoders, batch_size=2)


# ------------------------------------------------------------------------------------------ metrics
def test_l1_is_the_official_definition():
    gt, gen = pattern(0, 24), pattern(1, 10)
    expected = np.abs(np.asarray(gen.resize((24, 24), Image.BICUBIC), dtype=np.float64) - np.asarray(gt, dtype=np.float64)).mean() / 255
    assert pair_l1(gen, gt) == pytest.approx(expected, abs=1e-12)
    assert pair_l1(solid((10, 20, 30), 7), solid((40, 20, 0))) == pytest.approx(l1_by_hand((10, 20, 30), (40, 20, 0)))
    metric = MeanL1()
    metric.update([gt, solid((10, 20, 30), 7)], [gt, solid((40, 20, 0))])
    assert float(metric.compute()) == pytest.approx(l1_by_hand((10, 20, 30), (40, 20, 0)) / 2)  # identical pair: 0


def test_cosine_metric_is_the_mean_over_pairs():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = torch.tensor([[2.0, 0.0], [-1.0, -1.0], [4.0, 3.0]])
    metric = MeanCosine()
    metric.update(a[:2], b[:2])
    metric.update(a[2:], b[2:])
    assert float(metric.compute()) == pytest.approx((1 - 1 + 24 / 25) / 3)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        metric.update(a, b[:, :1])


def _direct(clip_dir: Path, dino_dir: Path, pairs):
    """CLIP-I, DINO and CLIP-T by their definitions, pair by pair, with the same tiny models: transformers' own
    processors (for DINO: short side 256 bicubic, centre crop 224, ImageNet mean / std) and torch's cosine."""
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel, ViTModel

    clip, dino = CLIPModel.from_pretrained(str(clip_dir)).eval(), ViTModel.from_pretrained(str(dino_dir), add_pooling_layer=False).eval()
    tok, images = AutoTokenizer.from_pretrained(str(clip_dir)), CLIPImageProcessorPil.from_pretrained(str(clip_dir))
    dino_proc = CLIPImageProcessorPil(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, image_mean=list(IMAGENET_MEAN),
                                      image_std=list(IMAGENET_STD))

    def cos(a, b):
        return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1))

    with torch.no_grad():
        def clip_image(im):
            return clip.get_image_features(pixel_values=images(images=[im], return_tensors="pt")["pixel_values"]).pooler_output

        def dino_image(im):
            return dino(pixel_values=dino_proc(images=[im], return_tensors="pt")["pixel_values"]).last_hidden_state[:, 0]

        def clip_text(text):
            return clip.get_text_features(**tok([text], return_tensors="pt")).pooler_output

        out = {"clip_i": [], "dino": [], "clip_t": []}
        for gen, gt, caption in pairs:
            out["clip_i"].append(cos(clip_image(gen), clip_image(gt)))
            out["dino"].append(cos(dino_image(gen), dino_image(gt)))
            out["clip_t"].append(cos(clip_image(gen), clip_text(caption)))
    return {k: sum(v) / len(v) for k, v in out.items()}


def test_metrics_on_two_sessions_equal_the_definitions(hand, encoders):
    _, out, evaluation = hand
    result, examples = evaluation.score_folder(out, out)
    # final turn: 101_1 vs 101-output1, 202_iter_2 vs 202-output2; all turns: 101_1, 202_1, 202_inde_2 vs outputs 1, 1, 2
    final = [(GENERATED["101"]["101_1.png"], GT["101"][0]), (GENERATED["202"]["202_iter_2.png"], GT["202"][1])]
    every = [(GENERATED["101"]["101_1.png"], GT["101"][0]), (GENERATED["202"]["202_1.png"], GT["202"][0]),
             (GENERATED["202"]["202_inde_2.png"], GT["202"][1])]
    for group, pairs in (("final_turn", final), ("all_turn", every)):
        by_hand = sum(l1_by_hand(g.getpixel((0, 0)), t.getpixel((0, 0))) for g, (_, t, _) in pairs) / len(pairs)
        assert result[f"{group}/l1"] == pytest.approx(by_hand, abs=1e-9)
        direct = _direct(*encoders, [(g, t, c) for g, (_, t, c) in pairs])
        for metric in ("clip_i", "dino", "clip_t"):
            assert result[f"{group}/{metric}"] == pytest.approx(direct[metric], abs=1e-5), (group, metric)
    # the chain turn by turn: turn 1 over both sessions, turn 2 over the one that reaches it
    assert result["turn1/l1"] == pytest.approx((l1_by_hand((190, 10, 0), (200, 0, 0)) + l1_by_hand((0, 180, 0), (0, 200, 0))) / 2)
    assert result["turn2/l1"] == pytest.approx(l1_by_hand((0, 0, 100), (0, 0, 200)))
    assert result["turn2_inde/l1"] == pytest.approx(l1_by_hand((0, 0, 220), (0, 0, 200)))
    assert result["turn1/sessions"] == 2 and result["turn2/sessions"] == 1 and "turn3/l1" not in result
    assert result["sessions"] == 2 and result["turns"] == 3 and result["partial"] is False and result["skipped"] == {}
    assert json.loads((out / "summary.json").read_text())["final_turn/l1"] == pytest.approx(result["final_turn/l1"])
    # the grid: input, the chain's edits, the last target; one row per session, the longest first
    assert evaluation.example_labels == ("input", "turn 1", "turn 2", "truth") and len(examples) == 2
    assert examples[0].caption == "make it green → make it blue" and len(examples[0].images) == 4


def test_encoders_equal_the_definitions_on_textured_images(hand, encoders):
    """Solid colours survive any resize or crop; noise at several sizes does not, so preprocessing is checked too."""
    from mingexp.eval.magicbrush import Pair

    _, _, evaluation = hand
    pairs = [(pattern(1, 64), pattern(2, 300), "a red square"), (pattern(3, 224), pattern(3, 224), "two blue stars and a green cross"),
             (pattern(4, 500), pattern(5, 40), "a red square")]
    got = evaluation.scorer().score({"g": [Pair(g, t, c) for g, t, c in pairs]})["g"]
    direct = _direct(*encoders, pairs)
    for metric in ("clip_i", "dino", "clip_t"):
        assert got[metric] == pytest.approx(direct[metric], abs=1e-5), metric


def test_identical_images_score_the_ceiling(hand):
    _, _, evaluation = hand
    truth = evaluation.baselines(GT_SIZE)["truth"]
    for group in ("final_turn", "all_turn", "turn1", "turn2", "turn2_inde"):
        assert truth[f"{group}/l1"] == 0.0
        assert truth[f"{group}/clip_i"] == pytest.approx(1.0, abs=1e-6) and truth[f"{group}/dino"] == pytest.approx(1.0, abs=1e-6)


def test_baselines_floor_no_edit_and_noise(hand):
    _, _, evaluation = hand
    b = evaluation.baselines(16)
    # no edit: the chain keeps the real input; an independent turn returns the previous target
    assert b["no_edit"]["final_turn/l1"] == pytest.approx((l1_by_hand((100,) * 3, (200, 0, 0)) + l1_by_hand((50,) * 3, (0, 0, 200))) / 2)
    assert b["no_edit"]["turn2_inde/l1"] == pytest.approx(l1_by_hand((0, 200, 0), (0, 0, 200)))
    assert b["noise"]["all_turn/l1"] > 0.2 and set(b) == {"noise", "no_edit", "truth"}


# ------------------------------------------------------------------------------------------ pairing
def test_official_pairing_on_names():
    three = ["7_1.png", "7_iter_2.png", "7_iter_3.png", "7_inde_3.png", "7_inde_2.png", "7-mask1.png", "notes.txt"]
    assert official_final_turn(three) == "7_iter_3.png"
    assert official_all_turns(three) == ["7_1.png", "7_inde_2.png", "7_inde_3.png"]
    assert official_final_turn(["7_1.png", "7-mask1.png"]) == "7_1.png" and official_all_turns(["7_1.png"]) == ["7_1.png"]
    with pytest.raises(ValueError, match="not named"):
        official_final_turn(["7_2.png"])
    assert [generated_name("7", t, s) for t, s in ((1, "iter"), (1, "inde"), (2, "iter"), (3, "inde"))] == [
        "7_1.png", "7_1.png", "7_iter_2.png", "7_inde_3.png"]


def test_a_folder_that_does_not_pair_is_skipped_and_counted(hand):
    _, out, evaluation = hand
    (out / "202" / "202_inde_2.png").unlink()  # all turns: only _1 for two ground-truth turns
    (out / "999").mkdir()  # a folder the test set does not have
    result, _ = evaluation.score_folder(out, out)
    assert result["sessions"] == 1 and result["partial"] is True and result["extra_folders"] == ["999"]
    (reason, entry), = result["skipped"].items()
    assert "pair" in reason and entry["count"] == 1 and entry["e.g."][0].startswith("202:")
    assert "turn2/l1" not in result and result["final_turn/l1"] == pytest.approx(l1_by_hand((190, 10, 0), (200, 0, 0)))


# ------------------------------------------------------------------------------------------ bad input
def test_missing_output_image_and_missing_caption_are_skipped_and_counted(tmp_path, encoders):
    sessions = {**GT, "303": [("make it red", solid((200, 0, 0)), "a red square")], "404": [("x", solid((1, 2, 3)), "c")]}
    gt = write_test_set(tmp_path / "test", sessions, {**INPUTS, "303": solid((9, 9, 9)), "404": solid((9, 9, 9))})
    (gt / "images" / "303" / "303-output1.png").unlink()
    local = json.loads((gt / "local_descriptions.json").read_text())
    del local["404"]["404-output1.png"]
    (gt / "local_descriptions.json").write_text(json.dumps(local))
    data = read_magicbrush(gt)
    assert [s.img_id for s in data.sessions] == ["101", "202"] and data.in_set == 4 and data.coverage()["partial"] is True
    assert data.skips.counts == {"missing image file": 1, "missing local description": 1}
    assert data.skips.names["missing image file"] == ["303 (images/303/303-output1.png)"]
    (gt / "images" / "101" / "101-input.png").write_bytes(b"not a png")
    assert read_magicbrush(gt).skips.counts["unreadable image (or over the pixel cap)"] == 1
    assert [s.img_id for s in read_magicbrush(gt, n_sessions=1).sessions] == ["202"]  # the first n readable ones


def test_a_folder_without_the_test_set_names_eval_path(tmp_path, encoders):
    with pytest.raises(ConfigError, match=r"eval.path=.*no edit_sessions.json.*password-protected zip"):
        MagicBrushEval(tmp_path, *encoders).dataset()
    (tmp_path / "edit_sessions.json").write_text("{}")
    with pytest.raises(ConfigError, match="no local_descriptions.json"):
        read_magicbrush(tmp_path)
    with pytest.raises(ConfigError, match=r"eval.clip_path=.*no such folder.*openai/clip-vit-base-patch32"):
        MagicBrushEval(tmp_path, tmp_path / "nothing", encoders[1])


# ------------------------------------------------------------------------------------------ toy world
def test_toy_sessions_are_in_the_magicbrush_layout(tmp_path):
    from mingexp.data.shapes.magicbrush import main

    main([str(tmp_path / "mb"), "n=4", "resolution=32"])
    root = tmp_path / "mb"
    sessions = json.loads((root / "edit_sessions.json").read_text())
    local = json.loads((root / "local_descriptions.json").read_text())
    glob = json.loads((root / "global_descriptions.json").read_text())
    assert len(sessions) == 4 and len(json.loads((root / "edit_turns.json").read_text())) == sum(map(len, sessions.values()))
    for img_id, turns in sessions.items():
        assert 1 <= len(turns) <= 3 and turns[0]["input"] == f"{img_id}-input.png"
        files = {p.name for p in (root / "images" / img_id).iterdir()}
        want = {f"{img_id}-input.png"} | {f"{img_id}-{k}{t}.png" for t in range(1, len(turns) + 1) for k in ("output", "mask")}
        assert files == want
        for t, turn in enumerate(turns, start=1):
            assert turn["output"] == f"{img_id}-output{t}.png" and turn["output"] in local[img_id] and turn["output"] in glob[img_id]
            if t > 1:
                assert turn["input"] == turns[t - 2]["output"]
            # the mask is exactly where the turn changed the picture
            before = np.asarray(Image.open(root / "images" / img_id / turn["input"]).convert("RGB"), dtype=int)
            after = np.asarray(Image.open(root / "images" / img_id / turn["output"]).convert("RGB"), dtype=int)
            mask = np.asarray(Image.open(root / "images" / img_id / turn["mask"]))
            assert mask.max() == 255 and np.array_equal(mask == 255, np.abs(before - after).max(-1) > 0)


# ------------------------------------------------------------------------------------------ end to end
def test_a_tiny_model_end_to_end(tiny_dir, tmp_path, encoders):
    from mingexp.data.shapes.magicbrush import write_magicbrush_layout
    from mingexp.models.generation import generate

    gt = write_magicbrush_layout(tmp_path / "test", n_sessions=3, resolution=32)
    model = build(tiny_dir, "model.sampler.steps=2").eval()
    evaluation = MagicBrushEval(gt, *encoders, batch_size=4, seed=11, steps=2)
    sessions = evaluation.dataset().sessions
    assert evaluation.work() == sum(2 * len(s.turns) - 1 for s in sessions)
    out = tmp_path / "magicbrush"
    values, examples = evaluation(model, out)
    # the official layout, exactly, and nothing else in a session's folder
    for s in sessions:
        n = len(s.turns)
        want = {f"{s.img_id}_1.png"} | {f"{s.img_id}_{k}_{t}.png" for t in range(2, n + 1) for k in ("iter", "inde")}
        assert {p.name for p in (out / s.img_id).iterdir()} == want
    records = [json.loads(line) for line in (out / "generation.jsonl").read_text().splitlines()]
    assert len(records) == evaluation.work() and {r["seed"] for r in records} == set(range(11, 11 + sum(len(s.turns) for s in sessions)))
    assert all(math.isfinite(v) for v in values.values())
    longest = max(len(s.turns) for s in sessions)
    for group in ("final_turn", "all_turn", *(f"turn{t}" for t in range(1, longest + 1))):
        assert {f"{group}/{m}" for m in ("l1", "clip_i", "dino", "clip_t")} <= set(values)
    assert values["sessions"] == 3 and values["partial"] == 0.0 and json.loads((out / "summary.json").read_text())["skipped"] == {}
    assert len(examples) == 3
    # multi-turn is chained on the model's own output, single-turn starts from the true previous target
    s = next(s for s in sessions if len(s.turns) >= 2)
    seed = next(r["seed"] for r in records if r["file"] == f"{s.img_id}/{s.img_id}_iter_2.png")
    again = generate(model, [s.turns[1].instruction] * 2, [seed] * 2,
                     [[Image.open(out / s.img_id / f"{s.img_id}_1.png").convert("RGB")], [Image.open(s.turns[1].source).convert("RGB")]], steps=2)
    assert np.array_equal(np.asarray(again[0]), np.asarray(Image.open(out / s.img_id / f"{s.img_id}_iter_2.png").convert("RGB")))
    assert np.array_equal(np.asarray(again[1]), np.asarray(Image.open(out / s.img_id / f"{s.img_id}_inde_2.png").convert("RGB")))
    # the same folder scored again (score-only) gives the same numbers
    again_values, _ = evaluation.score_folder(out, tmp_path / "rescored")
    assert again_values["final_turn/l1"] == pytest.approx(values["final_turn/l1"])


# ------------------------------------------------------------------------------------------ configs
def compose_evaluate(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("evaluate", overrides=[f"paths.root_dir={tmp_path}", f"out_dir={tmp_path / 'out'}", *overrides])


def test_score_only_through_evaluate(hand, tmp_path, encoders):
    from mingexp.evaluate import evaluate

    gt, out, _ = hand
    cfg = compose_evaluate(tmp_path, "+eval=magicbrush", f"eval.path={gt}", f"eval.clip_path={encoders[0]}", f"eval.dino_path={encoders[1]}",
                           f"score_only={out}")
    result = evaluate(cfg)
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["evaluation"] == "magicbrush" and written["score_only"] == str(out)
    assert written["final_turn/l1"] == pytest.approx((l1_by_hand((190, 10, 0), (200, 0, 0)) + l1_by_hand((0, 0, 100), (0, 0, 200))) / 2)
    assert result["sessions"] == 2 and result["partial"] is False


def test_the_config_works_as_a_training_partial_and_writes_the_toy_sessions(tmp_path, encoders):
    from mingexp.eval.callbacks import _build

    cfg = compose_evaluate(tmp_path, "+eval=magicbrush", f"paths.shapes_dir={tmp_path / 'shapes'}", f"eval.clip_path={encoders[0]}",
                           f"eval.dino_path={encoders[1]}", "eval.prepare.n_sessions=5", "eval.prepare.resolution=32", "+eval._partial_=true")
    evaluation = _build(instantiate(cfg.eval), "callbacks.evaluation.evals.magicbrush", {"n_sessions": 2})
    assert isinstance(evaluation, MagicBrushEval) and not (tmp_path / "shapes").exists()  # nothing written before it is used
    data = evaluation.dataset()  # the default path is empty: the toy sessions are written there first
    assert (tmp_path / "shapes" / "heldout" / "magicbrush" / "edit_sessions.json").is_file()
    assert len(data.sessions) == 2 and data.in_set == 5 and data.coverage()["partial"] is True
    # any other empty path is an error, not a place to write toy data
    shutil.rmtree(tmp_path / "shapes")
    other = MagicBrushEval(tmp_path / "elsewhere", *encoders, prepare=evaluation.prepare)
    with pytest.raises(ConfigError, match="eval.path="):
        other.dataset()
    assert not (tmp_path / "shapes").exists()

"""Flow-GRPO post-training (+experiment=grpo) on the shrunk toy model: from a supervised run's checkpoint, only the
configured parts move, KL is zero at step 0, equal rewards give zero gradient, a resumed run is the uninterrupted one,
bad rewards are skipped then stop the run, and evaluation prompts are refused unless allowed (and then said)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from mingexp.rl.data import PromptBatch
from mingexp.rl.prompts import ShapesPrompts
from mingexp.rl.rewards import Scores
from mingexp.train import train
from tests.integration.conftest import EVAL_SMALL, FAST, compose_train

# the GRPO run at test size: 2 prompts × a group of 3, 2 sampler steps
GRPO_FAST = ["+experiment=grpo", "data.batch_size=2", "module.group_size=3", "module.steps=2",
             "optimized_metric=train/reward_epoch"]


@pytest.fixture(scope="module")
def start(tiny_dir, world, tmp_path_factory) -> Path:
    """A supervised run's checkpoint (3 steps) to post-train from."""
    out = tmp_path_factory.mktemp("supervised")
    train(compose_train(tiny_dir, world, out))
    return out / "checkpoints" / "last.ckpt"


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_grpo_trains_from_a_run_the_configured_parts_only_with_kl_zero_at_step_zero(tiny_dir, world, tmp_path, start):
    from mingexp.io.checkpoint import model_state, read

    fast = [o for o in FAST if not o.startswith(("callbacks.evaluation", "callbacks.best"))]
    small = [o for o in EVAL_SMALL if not o.startswith(("callbacks.evaluation.evals.recon", "callbacks.evaluation.evals.edit",
                                                        "callbacks.evaluation.final_overrides"))]  # the experiment has no recon / edit
    # the judge (the model's own MLLM): a reward that varies within a group even for a barely trained model
    cfg = compose_train(tiny_dir, world, tmp_path, *fast, *small, *GRPO_FAST, f"init_from={start}", "trainer.max_steps=3", "module/reward=judge",
                        "callbacks.evaluation.final_overrides={geneval_shapes: {prompts: 6, images_per_prompt: 1}}", fast=False)
    assert cfg.module._target_ == "mingexp.lit.grpo.GRPOLitModule" and cfg.task_name == "grpo" and "eval_prompts=False" in cfg.tags
    built = instantiate(cfg.model)
    frozen_before = {k: v.clone() for k, v in built.state_dict().items() if k.startswith(("mllm.", "vae."))}
    train(cfg)
    rows = list(csv.DictReader(open(next(Path(tmp_path).rglob("metrics.csv")))))
    kl = {int(r["step"]): float(r["grpo/kl"]) for r in rows if r.get("grpo/kl")}
    assert kl[0] == 0.0 and set(kl) == {0, 1, 2}
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"train/reward", "train/reward_std", "grpo/zero_advantage_groups", "grpo/images_per_s", "reward/p_yes",
            "grpo/contamination/exact", "eval_start/geneval_shapes/seen/overall", "eval_final/geneval_shapes/unseen/overall"} <= logged
    report = json.loads((tmp_path / "grpo.json").read_text())
    assert report["contamination"]["contaminated_captions"] == 0 and report["allow_eval_prompts"] is False
    assert (tmp_path / "samples" / "start.png").is_file() and (tmp_path / "samples" / "final.png").is_file()  # the sheet before / after
    for name in ("start.json", "final.json"):
        values = json.loads((tmp_path / "eval" / name).read_text())
        assert 0 <= values["eval/geneval_shapes/seen/overall"] <= 1
    # what moved: the DiT and the connector (and the learnable query block of the shrunk preset); the MLLM and VAE did not
    before = model_state(read(start))
    after = model_state(read(tmp_path / "checkpoints" / "last.ckpt"))
    moved = {k.split(".")[0] for k in after if k in before and not torch.equal(after[k], before[k])}
    assert {"dit", "connector"} <= moved and not moved & {"mllm", "vae"}
    assert not any(k.startswith(("mllm.", "vae.")) for k in after)  # frozen parts are never saved
    rebuilt = instantiate(cfg.model)
    for k, v in rebuilt.state_dict().items():
        if k in frozen_before:
            assert torch.equal(v, frozen_before[k]), k


def _module(tiny_dir, world, tmp_path, *overrides, experiment: str = "grpo"):
    cfg = compose_train(tiny_dir, world, tmp_path, f"+experiment={experiment}", *GRPO_FAST[1:], *overrides)
    module = instantiate(cfg.module)
    module.log = lambda *a, **k: None  # no trainer to log to
    module.reference.capture(module.model) if module.reference is not None else None
    return module


class Constant:
    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, images, prompts, metadata):
        return Scores(torch.full((len(images),), self.value))


def test_equal_rewards_in_a_group_give_zero_policy_gradient(tiny_dir, world, tmp_path):
    module = _module(tiny_dir, world, tmp_path)
    batch = PromptBatch(0, ShapesPrompts().batch(0, 0, 2))
    module.reward = Constant(0.5)
    module.training_step(batch, 0).backward()
    grads = [p.grad for p in module.model.parameters() if p.requires_grad]
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
    module.zero_grad(set_to_none=True)

    class Varied:  # different rewards within each group: a real gradient
        def __call__(self, images, prompts, metadata):
            return Scores(torch.linspace(0, 1, len(images)))

    module.reward = Varied()
    module.training_step(batch, 0).backward()
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in module.model.dit.parameters())


def test_unusable_rewards_skip_their_group_and_a_run_of_them_stops(tiny_dir, world, tmp_path):
    from mingexp.lit.grpo import RewardFailed

    module = _module(tiny_dir, world, tmp_path, "module.reward_tolerance=3")
    batch = PromptBatch(0, ShapesPrompts().batch(0, 0, 2))

    class HalfNaN:  # the first group's scores are NaN, the second's fine
        def __call__(self, images, prompts, metadata):
            s = torch.linspace(0, 1, len(images))
            s[:3] = float("nan")
            return Scores(s)

    module.reward = HalfNaN()
    assert module.training_step(batch, 0) is not None  # the good group still trains
    assert module.bad_groups_total == 1 and module.bad_group_streak == 0

    class TooMany:
        def __call__(self, images, prompts, metadata):
            return Scores(torch.ones(len(images) + 1))

    module.reward = TooMany()
    assert module.training_step(batch, 0) is None  # nothing usable: no update
    assert module.bad_groups_total == 3 and module.bad_group_streak == 2
    with pytest.raises(RewardFailed, match=r"reward groups in a row were unusable.*returned 7 scores for 6 images"):
        module.training_step(batch, 0)


def test_a_resumed_grpo_run_is_the_uninterrupted_one(tiny_dir, world, tmp_path, start):
    from mingexp.io.checkpoint import read

    base = [*GRPO_FAST, f"init_from={start}", "callbacks.evaluation=null", "callbacks.samples=null"]
    straight = tmp_path / "straight"
    train(compose_train(tiny_dir, world, straight, *base, "trainer.max_steps=4"))
    parted = tmp_path / "parted"
    train(compose_train(tiny_dir, world, parted, *base, "trainer.max_steps=2"))
    train(compose_train(tiny_dir, world, parted, *base, "trainer.max_steps=4", "ckpt_path=last"))
    a, b = read(straight / "checkpoints" / "last.ckpt"), read(parted / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 4
    reference = [k for k in a["state_dict"] if k.startswith("reference.")]
    assert reference and all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in reference)
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert [c["PromptDataModule"]["consumed"] for c in (a, b)] == [4, 4]


def test_evaluation_prompts_are_refused_unless_allowed_and_then_said(tiny_dir, world, tmp_path):
    from mingexp.data.shapes import geneval_shapes_suite
    from mingexp.errors import ConfigError

    prompts = tmp_path / "eval_prompts.jsonl"
    prompts.write_text("".join(json.dumps({k: v for k, v in m.items() if k != "split"}) + "\n" for m in geneval_shapes_suite(0)[:12]))
    source = ["data.source._target_=mingexp.rl.prompts.MetadataFilePrompts", f"+data.source.path={prompts}", "~data.source.tags",
              "callbacks.evaluation=null", "callbacks.samples=null", "trainer.max_steps=1"]
    with pytest.raises(ConfigError, match="evaluation prompts"):
        train(compose_train(tiny_dir, world, tmp_path / "refused", *GRPO_FAST, *source))
    allowed = tmp_path / "allowed"
    cfg = compose_train(tiny_dir, world, allowed, *GRPO_FAST, *source, "grpo.allow_eval_prompts=true")
    assert "eval_prompts=True" in cfg.tags
    train(cfg)
    report = json.loads((allowed / "grpo.json").read_text())
    assert report["allow_eval_prompts"] is True and report["contamination"]["exact"] > 0


def test_grpo_composes_with_the_released_model(tiny_dir, world, tmp_path):
    """'+experiment=[finetune_release,grpo]' on the tiny released folder: the release's parts, finetune_release's rates,
    GRPO's module and prompts; the judge is the release's own MLLM. Two steps train what the release trained."""
    from hydra import compose, initialize_config_dir

    from mingexp.io.checkpoint import model_state, read
    from tests.conftest import CONF_DIR, release
    from tests.integration.conftest import RUN_FAST

    base = [f"paths.shapes_dir={world}", f"paths.output_dir={tmp_path}", f"paths.root_dir={tmp_path}", *RUN_FAST]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*base, "+experiment=[finetune_release,grpo]", *release(tiny_dir)[1:], "module/reward=judge",
                                          "data.batch_size=2", "module.group_size=2", "module.steps=2", "trainer.max_steps=2",
                                          "optimized_metric=train/reward_epoch"])
    assert cfg.model._target_.endswith("build_released") and cfg.module._target_ == "mingexp.lit.grpo.GRPOLitModule"
    assert cfg.module.lr.dit == 5.0e-6  # finetune_release's rate for a trained model
    start = instantiate(cfg.model).state_dict()
    train(cfg)
    after = model_state(read(tmp_path / "checkpoints" / "last.ckpt"))
    assert not any(k.startswith("mllm.") for k in after)
    moved = {k.split(".")[0] for k in after if k in start and not torch.equal(after[k], start[k])}
    assert "dit" in moved and "mllm" not in moved


def test_under_lora_the_reference_is_the_adapters_start_which_is_the_base_model(tiny_dir, world, tmp_path):
    """'+experiment=[finetune_lora,grpo]': only the adapters train, the reference copies them at the start (B = 0, so the
    reference policy is the base model), and swapping it in gives the base model's velocity after the adapters moved."""
    module = _module(tiny_dir, world, tmp_path, "model.queries.trainable=false", experiment="[finetune_lora,grpo]")
    ref = module.reference
    assert ref.names and all("lora_" in n for n in ref.names)
    model = module.model
    x, cond = torch.randn(2, model.dit.in_channels, 4, 4), torch.randn(2, 4, model.dit.condition_width)
    sigma = torch.tensor([0.5, 0.5])
    base = model.denoise(x, cond, sigma).detach()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.1)  # the adapters move (B ≠ 0): the policy is no longer the base model
    assert not torch.allclose(model.denoise(x, cond, sigma), base)
    with ref.swapped(model):
        torch.testing.assert_close(model.denoise(x, cond, sigma), base)
    assert not torch.allclose(model.denoise(x, cond, sigma), base)  # and back

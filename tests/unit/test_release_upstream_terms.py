"""The released folder on upstream's own terms (issue 33), checked against what we did not write: diffusers'
``SanaPipeline`` (the pipeline upstream samples through) with ``FlowMatchEulerDiscreteScheduler.from_pretrained`` of
the folder's ``scheduler/``, fed the same condition and the same starting noise. The tiny released folder writes
what upstream's code writes (``models.tiny.write_tiny_release``): an upstream ``qwen2_5_llm/config.json``, a scheduler
with a non-default shift, a 512-px SANA asked for other sizes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from safetensors.torch import load_file, save_file

from mingexp.errors import ConfigError
from tests.conftest import compose_cfg, release


def released_model(folder: Path, *overrides: str):
    return instantiate(compose_cfg(folder.parent, *release(folder.parent), f"model.path={folder}", *overrides, small=False).model).eval()


def copy_release(tiny_dir: Path, tmp_path: Path, name: str = "release") -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny_dir / "release", folder)
    return folder


@torch.no_grad()
def ours_and_diffusers(model, folder: Path, height: int, width: int, seed: int = 0, steps: int = 4, guidance: float = 4.0):
    """(our image, diffusers SanaPipeline's image), both (3, height, width) in [0, 1], for one prompt and seed."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SanaPipeline

    inputs = model.mllm.processor(["a red circle"]).to(model.device)
    ours = model.sample(inputs, height, width, steps=steps, guidance_scale=guidance, generator=[torch.Generator().manual_seed(seed)])[0]
    cond = model.encode(inputs).tokens
    # the starting noise of our seed rule, at the size the pipeline denoises at (its own resolution binning)
    h, w = model.dit.sampling_size(height, width)
    f = model.vae.spatial_factor
    noise = torch.randn((1, model.dit.in_channels, h // f, w // f), generator=torch.Generator().manual_seed(seed))
    pipe = SanaPipeline(tokenizer=None, text_encoder=None, vae=model.vae.autoencoder, transformer=model.dit.transformer,
                        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler"))
    pipe.set_progress_bar_config(disable=True)
    mask = torch.ones(cond.shape[:2])
    theirs = pipe(prompt_embeds=model.dit.mlp(cond), prompt_attention_mask=mask, negative_prompt_embeds=model.dit.mlp(cond * 0),
                  negative_prompt_attention_mask=mask, guidance_scale=guidance, num_inference_steps=steps, height=height, width=width,
                  latents=noise, output_type="pt", negative_prompt=None).images[0]
    return ours, theirs


def test_sampling_follows_the_folders_scheduler_as_diffusers_does(tiny_dir, tmp_path):
    """Two folders differing only in scheduler/'s shift: different images, each equal to SanaPipeline with
    FlowMatchEulerDiscreteScheduler.from_pretrained(<that folder>/scheduler) (upstream's sana_loss.py)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    other = copy_release(tiny_dir, tmp_path)
    config = json.loads((other / "scheduler" / "scheduler_config.json").read_text())
    assert config["shift"] == 3.0  # the tiny folder's: not the class default
    (other / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "shift": 1.5}))
    images = []
    for folder in (tiny_dir / "release", other):
        model = released_model(folder)
        assert model.sampler.shift == FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler").config.shift
        ours, theirs = ours_and_diffusers(model, folder, 512, 512)
        assert torch.allclose(ours, theirs, atol=2e-4), (ours - theirs).abs().max()
        images.append(ours)
    assert (images[0] - images[1]).abs().max() > 0.05


def test_a_dpm_solver_scheduler_folder_samples_at_what_the_flow_class_reads_from_it(tiny_dir, tmp_path, capsys):
    """A DPM-solver config (upstream's other reading of scheduler/): FlowMatchEulerDiscreteScheduler takes no
    flow_shift from it, so both upstream and mingexp sample at shift 1; an explicit override is applied and printed."""
    from diffusers import DPMSolverMultistepScheduler

    folder = copy_release(tiny_dir, tmp_path)
    shutil.rmtree(folder / "scheduler")
    DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction").save_pretrained(folder / "scheduler")
    assert released_model(folder).sampler.shift == 1.0
    model = released_model(tiny_dir / "release", "model.sampler.shift=2.0")
    assert model.sampler.shift == 2.0 and "model.sampler.shift=2.0 overrides" in capsys.readouterr().out


def test_generation_at_the_native_bin_then_resized_as_sana_pipeline(tiny_dir):
    """The 512-px SANA asked for 256² and 300×500: denoised at its bin (512², 384×640), then resized and cropped,
    equal to SanaPipeline's own resolution binning."""
    model = released_model(tiny_dir / "release")
    assert model.default_size() == 512
    assert model.dit.sampling_size(256, 256) == (512, 512) and model.dit.sampling_size(300, 500) == (384, 640)
    for h, w in ((256, 256), (300, 500)):
        ours, theirs = ours_and_diffusers(model, tiny_dir / "release", h, w)
        assert ours.shape == (3, h, w) and torch.allclose(ours, theirs, atol=2e-4), (ours - theirs).abs().max()


def test_timestep_scale_is_honoured(tiny_dir, tmp_path):
    folder = copy_release(tiny_dir, tmp_path)
    config_file = folder / "transformer" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "timestep_scale": 2.5}))
    model = released_model(folder)
    assert torch.equal(model.dit.timestep(torch.tensor([0.2])), torch.tensor([0.2 * 1000 * 2.5]))
    ours, theirs = ours_and_diffusers(model, folder, 512, 512)
    assert torch.allclose(ours, theirs, atol=2e-4)
    plain, _ = ours_and_diffusers(released_model(tiny_dir / "release"), tiny_dir / "release", 512, 512)
    assert (ours - plain).abs().max() > 0.01


def test_the_upstream_lm_config_loads_where_stock_transformers_fails(tiny_dir):
    from transformers import Qwen2ForCausalLM

    from mingexp.models.release.mllm import lm_config, load_released_mllm

    raw = json.loads((tiny_dir / "release" / "qwen2_5_llm" / "config.json").read_text())
    assert raw["rope_scaling"]["type"] == "mrope" and raw["use_llm_3drope"] and "audio_id_shift" in raw  # upstream's own keys
    with pytest.raises(KeyError, match="mrope"):
        Qwen2ForCausalLM.from_pretrained(tiny_dir / "release" / "qwen2_5_llm")
    config = lm_config(tiny_dir / "release")
    assert config.rope_parameters["mrope_section"] == [16, 24, 24] and config.rope_parameters["rope_type"] == "default"
    mllm = load_released_mllm(tiny_dir / "release")
    assert list(mllm.text_config.rope_parameters["mrope_section"]) == [16, 24, 24]


def test_transformer_tensors_in_the_mlp_file_override_as_upstream_and_other_groups_are_refused(tiny_dir, tmp_path, capsys):
    folder = copy_release(tiny_dir, tmp_path)
    file = folder / "mlp" / "model.safetensors"
    state = load_file(str(file))
    weight = load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))["caption_projection.linear_1.weight"]
    save_file({**state, "sana.caption_projection.linear_1.weight": torch.full_like(weight, 0.25)}, str(file))
    model = released_model(folder)
    assert torch.equal(model.dit.transformer.caption_projection.linear_1.weight, torch.full_like(weight, 0.25))
    assert "1 sana.* tensor(s) replace the transformer's" in capsys.readouterr().out
    save_file({**state, "other.head.weight": torch.zeros(2)}, str(file))
    with pytest.raises(InstantiationException, match=r"unknown key\(s\) \['other.head.weight'\]"):
        released_model(folder)


def renamed(folder: Path, file: str, new_prefix: str = "renamed.") -> str:
    """Rename the first tensor of ``folder/file``; returns its old name."""
    state = load_file(str(folder / file))
    first = sorted(state)[0]
    save_file({(new_prefix + k if k == first else k): v for k, v in state.items()}, str(folder / file))
    return first


@pytest.mark.parametrize("part,file,key", [
    ("qwen2_5_llm", "model.safetensors", "the released LM"),
    ("connector", "model.safetensors", "model.connector"),
    ("transformer", "diffusion_pytorch_model.safetensors", "model.dit"),
    ("vae", "diffusion_pytorch_model.safetensors", "model.vae"),
    ("qwen2_5_vit", "model.safetensors", "the released ViT"),
])
def test_a_part_with_one_tensor_renamed_is_refused_by_key_name(tiny_dir, tmp_path, part, file, key):
    folder = copy_release(tiny_dir, tmp_path)
    old = renamed(folder / part, file)
    with pytest.raises(InstantiationException, match=rf"{re.escape(key)}.*does not load exactly: 1 tensor\(s\) missing from the folder .*"
                                                    rf"in the folder but unknown to the model \(e\.g\. renamed\.{re.escape(old)}\)"):
        released_model(folder)


def test_the_mllm_with_one_tensor_renamed_is_refused(tiny_dir, tmp_path):
    from mingexp.models.mllm import FrozenMLLM

    folder = tmp_path / "mllm"
    shutil.copytree(tiny_dir / "mllm", folder)
    old = renamed(folder, "model.safetensors")
    with pytest.raises(ConfigError, match=rf"model.mllm: .*does not load exactly: .*renamed.{old}"):
        FrozenMLLM.from_pretrained(folder)


def test_trainable_parts_hold_fp32_whatever_their_checkpoint_stores(tiny_dir, tmp_path):
    """Issue 33, point 8: checkpoints saved in bf16 (as the public ones are): the connector and the DiT load as fp32
    master weights, the frozen MLLM and VAE in their configured dtype."""
    from transformers import Qwen2Model

    from mingexp.models.tiny import write_tiny_qwen2, write_tiny_sana

    connector = write_tiny_qwen2(tmp_path / "connector_bf16", hidden_size=32)
    Qwen2Model.from_pretrained(connector).to(torch.bfloat16).save_pretrained(connector)  # re-saved in bf16
    sana = write_tiny_sana(tmp_path / "sana_bf16")
    from diffusers import SanaTransformer2DModel

    SanaTransformer2DModel.from_pretrained(sana / "transformer").to(torch.bfloat16).save_pretrained(sana / "transformer")
    assert load_file(str(sana / "transformer" / "diffusion_pytorch_model.safetensors"))["proj_out.weight"].dtype == torch.bfloat16
    cfg = compose_cfg(tiny_dir, f"+model.connector.path={connector}", "~model.connector.config", f"model.dit.path={sana}",
                      "model.dit.subfolder=transformer", "~model.dit.config", "model/vae=dcae", f"model.vae.path={sana}",
                      "model.vae.dtype=bf16", "model.mllm.dtype=bf16", small=False)
    model = instantiate(cfg.model)
    for part, params in model.param_groups().items():
        assert {p.dtype for p in params} <= {torch.float32}, part
    assert model.mllm.dtype == torch.bfloat16 and model.vae.autoencoder.dtype == torch.bfloat16

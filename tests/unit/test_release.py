"""The released Ming-Lite-Uni loaded as published (mingexp.models.release), on the tiny released-layout folder.

What upstream does is re-done here the way its code does it (Ming-unify/Ming_Uni: MingUniInference.py, process.py,
Templates_native.py) and compared with what mingexp computes: token ids, positions, hidden states.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from safetensors.torch import load_file, save_file

from mingexp.errors import ConfigError
from mingexp.models.generation import generate
from mingexp.models.release.processor import ADDITIONAL_SPECIAL_TOKENS, INTERLEAVE_TOKENS, ReleasedProcessor
from mingexp.io.release import key_map, released_state
from tests.conftest import compose_cfg, release

SYSTEM, USER, ASSISTANT = "<|im_start|>system\nYou are a helpful assistant.", "<|im_end|>\n<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def released(tiny_dir):
    cfg = compose_cfg(tiny_dir, *release(tiny_dir), small=False)
    return instantiate(cfg.model).eval()


def test_every_released_key_is_consumed_and_lands_in_its_place(released, tiny_dir):
    file = load_file(str(tiny_dir / "release" / "mlp" / "model.safetensors"))
    table = key_map(released.queries.scales)
    assert set(file) == set(table)  # strict both ways: nothing left over, nothing missing
    own = released.state_dict()
    for key, place in table.items():
        assert torch.equal(own[place], file[key].to(own[place].dtype)), (key, place)
    # the places are the parts the upstream code puts them in
    assert torch.equal(released.queries.queries[2], file["query_tokens_dict.16x16"])
    assert torch.equal(released.connector.proj_out.weight, file["proj_out.weight"])
    assert torch.equal(released.mllm.backbone.visual.projector[0].weight, file["linear_proj.0.weight"])
    assert torch.equal(released.dit.mlp.fc2.weight, file["mlp.fc2.weight"])


def test_unknown_missing_and_misshapen_keys_are_named(released, tiny_dir, tmp_path):
    folder = tmp_path / "release"
    shutil.copytree(tiny_dir / "release", folder)
    file = folder / "mlp" / "model.safetensors"
    state = load_file(str(file))
    state["extra.weight"] = torch.zeros(2)
    del state["proj_in.bias"]
    save_file(state, str(file))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['extra.weight'\].*missing key\(s\) \['proj_in.bias'\]"):
        released_state(folder, released, released.queries.scales)
    state = {**load_file(str(tiny_dir / "release" / "mlp" / "model.safetensors")), "proj_out.weight": torch.zeros(64, 32)}
    save_file(state, str(file))
    with pytest.raises(ConfigError, match=r"proj_out.weight is \[64, 32\] but connector.proj_out.weight is \[128, 32\]"):
        released_state(folder, released, released.queries.scales)


def test_a_missing_part_names_its_subfolder_and_a_wrong_sana_both_widths(tiny_dir, tmp_path):
    from mingexp.models.denoisers.sana_release import ReleasedSanaDenoiser
    from mingexp.models.release.mllm import load_released_mllm
    from mingexp.models.tiny import write_tiny_sana

    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "qwen2_5_llm").symlink_to(tiny_dir / "release" / "qwen2_5_llm")
    with pytest.raises(ConfigError, match=r"has no qwen2_5_vit \(the Qwen2.5 vision transformer\).*huggingface-cli download"):
        load_released_mllm(folder)
    other = write_tiny_sana(tmp_path / "sana", caption_channels=24)
    with pytest.raises(ConfigError, match="outputs 48 channels but the SANA at model.dit.path has caption_channels=24"):
        ReleasedSanaDenoiser.build(other, "transformer", head=tiny_dir / "release" / "mlp" / "model.safetensors")


def test_pickled_weights_are_refused(tiny_dir, tmp_path):
    from mingexp.models.release.mllm import load_released_mllm

    folder = tmp_path / "release"
    shutil.copytree(tiny_dir / "release", folder)
    llm = folder / "qwen2_5_llm"
    torch.save(load_file(str(llm / "model.safetensors")), llm / "pytorch_model.bin")
    (llm / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"the released LM \(qwen2_5_llm/\): .*holds only pickled weights \(pytorch_model.bin\)"):
        load_released_mllm(folder)


def test_token_protocol_matches_upstream(tiny_dir):
    """process.py's ids: the tokens added in upstream's order, the prompt tokenised piece by piece as MyProcessor does."""
    from transformers import AutoTokenizer

    proc = ReleasedProcessor.from_pretrained(tiny_dir / "release", image_pixels=1024)
    base = AutoTokenizer.from_pretrained(tiny_dir / "release" / "qwen2_5_llm")
    added = [proc.tokenizer.convert_tokens_to_ids(t) for t in ADDITIONAL_SPECIAL_TOKENS + INTERLEAVE_TOKENS]
    assert added == list(range(len(base), len(base) + 34))  # 15 specials, then the 19 interleave tokens

    def ids(text: str) -> list[int]:
        return proc.tokenizer(text)["input_ids"]

    image = Image.new("RGB", (48, 40), "red")
    enc = proc.encode("add a candle on top of the cake", [image])
    n = int(enc["image_grid_thw"].prod()) // 4
    question = ("<image>" + "<imagePatch>" * n + "</image>" + "\n add a candle on top of the cake").strip()
    assert enc["input_ids"] == ids(SYSTEM) + ids(USER) + ids(question) + ids(ASSISTANT)
    assert proc.encode("a red car")["input_ids"] == ids(SYSTEM) + ids(USER) + ids("a red car") + ids(ASSISTANT)
    assert proc.image_processor.size.shortest_edge == proc.image_processor.size.longest_edge == 1024  # min = max pixels


def upstream_query_states(mllm, folder: Path, prompt: str, image: Image.Image, queries: list[torch.Tensor], scales) -> torch.Tensor:
    """MingUniInference.image_gen_generate's one forward: the prompt, then per scale <image> q×s² </image>, the query
    slots filled after the image features, positions from the rope index with a (1, 2, 2s²) grid per scale, the
    causal LM over the whole sequence, the last hidden state at the query slots."""
    proc, backbone = mllm.processor, mllm.backbone
    enc = proc.encode(prompt, [image])
    start, end, pad = (proc.tokenizer.convert_tokens_to_ids(t) for t in (proc.image_start, proc.image_end, proc.image_pad))
    ids = list(enc["input_ids"])
    for s in scales:
        ids += [start] + [pad] * (s * s) + [end]
    ids = torch.tensor([ids])
    grid = torch.cat([enc["image_grid_thw"], torch.tensor([[1, 2, 2 * s * s] for s in scales])])
    # eva_encoder → linear_proj (Linear, GELU, Linear from mlp/model.safetensors) → F.normalize
    vit = backbone.visual.vit(enc["pixel_values"], grid_thw=enc["image_grid_thw"]).pooler_output
    w = load_file(str(Path(folder) / "mlp" / "model.safetensors"))
    hidden = torch.nn.functional.gelu(torch.nn.functional.linear(vit, w["linear_proj.0.weight"], w["linear_proj.0.bias"]))
    feats = torch.nn.functional.normalize(torch.nn.functional.linear(hidden, w["linear_proj.2.weight"], w["linear_proj.2.bias"]), dim=-1)
    slots = torch.cat([feats, *queries])
    embeds = backbone.get_input_embeddings()(ids)
    embeds = embeds.masked_scatter((ids == pad).unsqueeze(-1).expand_as(embeds), slots.to(embeds.dtype))
    positions, _ = backbone.get_rope_index(ids, mm_token_type_ids=(ids == pad).int(), image_grid_thw=grid)
    hidden = backbone.language_model(inputs_embeds=embeds, position_ids=positions).last_hidden_state
    n_image = feats.shape[0]
    return hidden[0, (ids[0] == pad).nonzero()[n_image:, 0]]


@torch.no_grad()
def test_query_states_equal_upstreams_single_sequence(released, tiny_dir):
    image = Image.new("RGB", (40, 40), (30, 200, 90))
    ref = upstream_query_states(released.mllm, tiny_dir / "release", "make it red", image, list(released.queries.queries), released.queries.scales)
    inputs = released.mllm.processor(["make it red"], [[image]])
    layout = released.queries.layout
    ours = released.mllm(inputs, released.queries(1), layout.positions)[0, layout.query_index]
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


def test_sampling_uses_the_folder_schedulers_shift(released, tiny_dir):
    from diffusers import FlowMatchEulerDiscreteScheduler

    upstream = FlowMatchEulerDiscreteScheduler.from_pretrained(tiny_dir / "release" / "scheduler")  # sana_loss.SANALoss
    upstream.set_timesteps(30)
    ours = released.sampler.scheduler()
    ours.set_timesteps(30)
    assert released.sampler.shift == upstream.config.shift and torch.equal(ours.sigmas, upstream.sigmas)


@torch.no_grad()
def test_generation_is_one_batched_deterministic_pass_with_the_released_null(released):
    prompts, seeds = ["a red circle", "a blue star", "a red circle"], [1, 2, 1]
    a = generate(released, prompts, seeds, batch_size=3)
    b = generate(released, prompts[1:2], seeds[1:2], batch_size=1)
    size = released.default_size()
    assert [im.size for im in a] == [(size, size)] * 3
    # same prompt and seed: the same image; batch-independent. At 512 px through the DC-AE's 6 stages the CPU's
    # kernels tile a row's pixels differently by its place in the batch: a last-bit float difference rounds a few
    # pixels one level apart (measured: 7 of 262 144 pixels), so "the same" is one level on 0.1 % of pixels
    for x, y in ((a[0], a[2]), (a[1], b[0])):
        diff = np.abs(np.asarray(x).astype(int) - np.asarray(y).astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    cond = released.encode(released.mllm.processor(["a red circle"])).tokens
    assert cond.shape == (1, 256, released.mllm.hidden_size)  # the 16×16 scale only, at the MLLM width
    assert torch.allclose(cond.norm(dim=-1), torch.ones(1, 256), atol=1e-5)  # L2-normalised, as released
    null = released.null_tokens(cond)
    assert not null.any() and released.dit.mlp(null).abs().sum() > 0  # zeros before the caption MLP, not after


@torch.no_grad()
def test_another_scale_can_be_sampled(tiny_dir):
    model = instantiate(compose_cfg(tiny_dir, *release(tiny_dir), "model/connector/tokens=one", "model.connector.tokens.scale=8", small=False).model).eval()
    assert model.encode(model.mllm.processor(["a red circle"])).tokens.shape[1] == 64
    assert generate(model, ["a red circle"], [0])[0].size == (model.default_size(),) * 2


@torch.no_grad()
def test_edit_and_chat_run_through_the_released_mllm(released):
    source = Image.new("RGB", (40, 40), "red")
    edited = generate(released, ["make it blue"], [0], images=[[source]])
    plain = generate(released, ["make it blue"], [0])
    size = released.default_size()
    assert np.asarray(edited[0]).shape == (size, size, 3) and not np.array_equal(np.asarray(edited[0]), np.asarray(plain[0]))
    answer = released.chat(source, "what colour is it?", max_new_tokens=4)
    assert isinstance(answer, str)
    inputs = released.mllm.processor(["what colour is it?"], [[source]], prompt_format="chat")
    out = released.mllm.model.generate(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, pixel_values=inputs.pixel_values,
                                        image_grid_thw=inputs.image_grid_thw, mm_token_type_ids=(inputs.input_ids == released.mllm.processor.image_pad_id).int(),
                                        max_new_tokens=4, do_sample=False)
    assert 0 < out.shape[1] - inputs.input_ids.shape[1] <= 4  # greedy decoding with M-RoPE ran (upstream's chat path crashes)


def test_a_released_file_missing_a_key_or_pickled_names_the_file_and_the_released_key(tiny_dir, tmp_path):
    """Issue 32: the projector's missing ``linear_proj.0.bias`` is named as the release spells it, with the file;
    a pickle saved as ``mlp/model.safetensors`` is named too (not the library's bare ``header too large``)."""
    from mingexp.models.release.mllm import load_released_mllm

    folder = tmp_path / "release"
    shutil.copytree(tiny_dir / "release", folder)
    file = folder / "mlp" / "model.safetensors"
    state = load_file(str(file))
    del state["linear_proj.0.bias"]
    save_file(state, str(file))
    with pytest.raises(ConfigError, match=rf"{file}: missing \['linear_proj.0.bias'\]\. It is not the released"):
        load_released_mllm(folder)
    torch.save(state, file)
    with pytest.raises(ConfigError, match=rf"{file}: not a readable safetensors file"):
        load_released_mllm(folder)

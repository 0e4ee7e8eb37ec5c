"""``MingUniPipeline``: a trained unified model as a self-describing folder, used like a diffusers pipeline.

Folder layout (written by :meth:`MingUniPipeline.save_pretrained` / ``python -m mingexp.export``)::

    mingexp_pipeline.json     format, version, the model config (every ``_target_``), the MLLM reference
    queries.safetensors       multi-scale queries + boundary tokens
    connector/                config.json (the Qwen2 stack's HF config) + model.safetensors (stack + projections)
    transformer/              the denoiser: its library's folder (diffusers save_pretrained: SANA, SD3, ...)
                              + adapter.safetensors when the adapter has weights of its own
    vae/                      diffusers AutoencoderDC / AutoencoderKL (absent for a pixel-space toy model)
    scheduler/                the sampler's diffusers FlowMatchEulerDiscreteScheduler config (what it samples with)
    align.safetensors         the alignment head, when the model has one (unused at inference)
    mllm/                     the frozen MLLM, only when copied (default: referenced by path / hub id)

No pickled object anywhere: JSON, safetensors and the libraries' own ``save_pretrained`` formats. A folder
is safe to load from a stranger: :meth:`from_pretrained` reads the JSON as data (:mod:`mingexp.untrusted`:
only mingexp's own builders, no interpolation, loader flags such as ``trust_remote_code`` from the caller
only), rebuilds the model with the same ``build_model`` as training, then loads the weights.
"""

from __future__ import annotations

import copy
import inspect
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from hydra.utils import instantiate
from PIL import Image

from mingexp.models.denoisers.base import LORA_FOLDER
from mingexp.models.generation import generate, seed_range
from mingexp.models.lora import has_lora, load_adapter_state_dict
from mingexp.models.unified import UnifiedModel, build_model
from mingexp.pipeline.images import InputError, check_text, load_image
from mingexp.untrusted import trusted_model_config
from mingexp.io.tensors import load_exact, read_tensors, save_tensors
from mingexp.utils import resolve_dtype

FORMAT = "mingexp-pipeline"
FORMAT_VERSION = 2  # 2: the denoiser behind its adapter (models/denoisers), parts as Hydra partials, the processor node
INDEX = "mingexp_pipeline.json"


def export_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """The model config an export rebuilds from: ``build_model`` on the parts' sections, whatever builder first
    assembled the model (``build_released`` also loaded a released folder's glue weights, which the export holds)."""
    params = inspect.signature(build_model).parameters
    kept = {k: copy.deepcopy(v) for k, v in config.items() if k in params or k == "_convert_"}
    return {"_target_": f"{build_model.__module__}.{build_model.__qualname__}", **kept}


class MingUniPipeline:
    """Generate, edit and chat with a trained model.

    Args:
        model: the unified model (eval mode).
        config: the model config it was built from (plain dict with ``_target_`` s), kept for ``save_pretrained``.
    """

    def __init__(self, model: UnifiedModel, config: dict[str, Any], max_prompt_tokens: int | None = None) -> None:
        self.model = model.eval()
        self.config = copy.deepcopy(config)
        # the cap on a prompt's tokens (None: what the MLLM's positions leave, see prompt_cap)
        self.max_prompt_tokens = max_prompt_tokens
        self._null: torch.Tensor | None = None  # the null condition, computed once (weights are fixed here)
        self._scaffold: dict[tuple, int] = {}  # tokens around an empty prompt, per image-size tuple

    # ------------------------------------------------------------ prompt caps
    def prompt_cap(self, images: Sequence[Image.Image] = (), new_tokens: int = 0, chat: bool = False) -> int:
        """The most tokens a prompt may have: ``max_prompt_tokens`` when set, else what the MLLM's positions
        leave after the template, the images' tokens, the query block (conditioning) or the answer (``chat``)."""
        mllm = self.model.mllm
        positions = int(getattr(mllm.text_config, "max_position_embeddings", 0) or 0)
        key = (chat, tuple(im.size for im in images))
        if key not in self._scaffold:
            kwargs = {"prompt_format": "chat"} if chat else {}
            self._scaffold[key] = int(mllm.processor([""], [list(images)], **kwargs).input_ids.shape[1])
        reserved = self._scaffold[key] + (int(new_tokens) if chat else self.model.queries.layout.block_length)
        derived = positions - reserved if positions else None
        caps = [c for c in (self.max_prompt_tokens, derived) if c is not None]
        if not caps:
            return 1 << 30
        cap = min(caps)
        if cap < 1:
            raise InputError(f"the MLLM's {positions} positions leave no room for a prompt after {reserved} reserved tokens "
                             "(template, images, query block or answer); use smaller images or fewer new tokens.")
        return cap

    def check_prompt(self, text, what: str = "prompt", images: Sequence[Image.Image] = (), new_tokens: int = 0,
                     chat: bool = False) -> str:
        """``text`` stripped, or an :class:`InputError` when it is empty or over :meth:`prompt_cap` tokens."""
        text = check_text(text, what)
        cap = self.prompt_cap(images, new_tokens, chat)
        if len(text) > 64 * cap:  # no tokenizer makes 64 characters one token: refused without tokenising
            raise InputError(f"{what} of {len(text)} characters is far over the cap of {cap} tokens; shorten it.")
        n = len(self.model.mllm.processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        if n > cap:
            raise InputError(f"{what} of {n} tokens is over the cap of {cap} tokens (the MLLM's positions less the template, "
                             "images and query block, or max_prompt_tokens); shorten it.")
        return text

    def null_tokens(self) -> torch.Tensor:
        """(1, T, C_cap): the MLLM on the empty prompt (or zeros), cached after the first call."""
        if self._null is None:
            with torch.no_grad():
                like = self.model.encode(self.model.mllm.processor([""]).to(self.device)).tokens  # the token shape
                self._null = self.model.null_tokens(like)
        return self._null

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, out: str | Path, copy_mllm: bool = False, lora: str = "merged", progress: bool = False) -> Path:
        """Write the folder (see the module docstring). ``copy_mllm`` copies the MLLM folder instead of referencing it.

        A LoRA-tuned model (``model.lora``) is written ``merged`` (plain weights with the updates folded in: the
        folder loads as a model without LoRA) or ``separate`` (the DiT's base weights plus its adapter in
        ``transformer/lora/``, peft's format; the model config keeps ``lora`` and loading re-attaches it).
        ``progress``: a bar over the parts as they are written.
        """
        from tqdm import tqdm

        from mingexp.models.lora import without_lora

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=5 + bool(copy_mllm), desc=f"export → {out.name}", unit=" part", disable=not progress)

        def done(part: str) -> None:
            bar.set_postfix_str(part)
            bar.update(1)

        m, cfg = self.model, export_model_config(self.config)
        merged = lora == "merged" and has_lora(m)
        # 1. trainable parts as safetensors; the connector with its Qwen2 config (LoRA folded in when merged)
        save_tensors(m.queries.state_dict(), out / "queries.safetensors")
        (out / "connector").mkdir(exist_ok=True)
        m.connector.transformer.config.save_pretrained(str(out / "connector"))
        connector = without_lora(m.connector) if merged and has_lora(m.connector) else m.connector
        save_tensors(connector.state_dict(), out / "connector" / "model.safetensors")
        if m.align is not None:
            save_tensors(m.align.state_dict(), out / "align.safetensors")
        done("queries, connector, align")
        # 2. DiT, VAE and scheduler in diffusers' formats
        m.dit.save_pretrained(out / "transformer", lora=lora)
        done("transformer")
        cfg["dit"] = m.dit.export_config("transformer")
        if merged:
            cfg["lora"] = None  # a plain model now
        if hasattr(m.vae, "autoencoder"):
            m.vae.autoencoder.save_pretrained(str(out / "vae"))
            cfg["vae"] = {**cfg["vae"], "path": ".", "subfolder": "vae"}
        done("vae")
        m.sampler.scheduler().save_pretrained(str(out / "scheduler"))
        done("scheduler")
        # the sampler reads the folder's scheduler/ (its whole config, not only the shift)
        cfg["sampler"] = {**cfg["sampler"], "scheduler": "scheduler", "shift": None, "num_train_timesteps": None}
        # 3. the connector is rebuilt from its own config (weights loaded afterwards), never from a path
        connector = {k: v for k, v in cfg["connector"].items() if k != "path"}
        connector["config"] = {k: v for k, v in m.connector.transformer.config.to_diff_dict().items()
                               if k not in ("architectures", "transformers_version", "model_type", "dtype", "torch_dtype", "is_causal")}
        cfg["connector"] = connector
        # 4. the frozen MLLM: referenced (an absolute path, so the folder works from any working directory, or a
        #    hub id) or copied
        mllm_source = str(cfg["mllm"]["path"])
        if Path(mllm_source).expanduser().is_dir():
            mllm_source = str(Path(mllm_source).expanduser().resolve())
            cfg["mllm"]["path"] = mllm_source
        if copy_mllm:
            target = out / "mllm"
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(mllm_source, target)
            cfg["mllm"]["path"] = "mllm"
            done("mllm")
        index = {"format": FORMAT, "version": FORMAT_VERSION, "mllm_source": mllm_source, "mllm_copied": bool(copy_mllm), "model": cfg}
        tmp = out / (INDEX + ".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        tmp.replace(out / INDEX)  # the index last: a folder without it is visibly incomplete
        done(INDEX)
        bar.close()
        return out

    # ----------------------------------------------------------------- loading
    @staticmethod
    def read_index(folder: str | Path) -> dict:
        folder = Path(folder)
        path = folder / INDEX
        if not path.is_file():
            raise InputError(f"{folder}: no {INDEX}; not a mingexp pipeline folder (or an interrupted export: run `python -m mingexp.export` again).")
        try:
            index = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: not valid JSON ({e}); re-export the checkpoint.") from None
        if not isinstance(index, dict) or not isinstance(index.get("model"), dict):
            raise InputError(f"{path}: no 'model' mapping; not a mingexp pipeline index (re-export the checkpoint).")
        if index.get("format") != FORMAT:
            raise InputError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}.")
        if index.get("version") != FORMAT_VERSION:
            raise InputError(f"{path}: format version {index.get('version')} but this mingexp reads version {FORMAT_VERSION}; re-export the checkpoint with this version.")
        needed = ["queries.safetensors", "connector/model.safetensors", "connector/config.json", "transformer/config.json", "scheduler/scheduler_config.json"]
        model = index["model"]
        for section in ("mllm", "dit", "vae"):
            if not isinstance(model.get(section), dict):
                raise InputError(f"{path}: model.{section} is missing or not a mapping; re-export the checkpoint.")
        if isinstance(model.get("align"), dict) and model["align"].get("weight", 0):
            needed.append("align.safetensors")
        if "path" in model["vae"]:
            needed.append("vae/config.json")
        missing = [n for n in needed if not (folder / n).is_file()]
        if missing:
            raise InputError(f"{folder}: incomplete pipeline folder, missing {missing}; re-export it.")
        return index

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
                        mllm_path: str | None = None, trust_remote_code: bool = False,
                        attn_implementation: str = "sdpa") -> "MingUniPipeline":
        """Load a folder written by :meth:`save_pretrained`.

        Args:
            mllm_path: overrides the referenced MLLM location.
            trust_remote_code / attn_implementation: the MLLM's loader flags. They are the caller's to give:
                the folder's own values are ignored, and a folder asking for remote code is refused
                (:mod:`mingexp.untrusted`).
        """
        folder = Path(folder).resolve()
        index = cls.read_index(folder)
        flags = {"mllm": {"trust_remote_code": bool(trust_remote_code), "attn_implementation": attn_implementation},
                 "connector": {"attn_implementation": attn_implementation}}
        cfg = trusted_model_config(index["model"], str(folder / INDEX), flags)
        resolved = copy.deepcopy(cfg)
        # the weights of the trained parts are this folder's, whatever paths the JSON names
        resolved["dit"]["path"] = str(folder)
        if "path" in resolved.get("vae", {}):
            resolved["vae"]["path"] = str(folder)
        # the sampler's scheduler is this folder's (an export written before it named one: its shift equals the folder's)
        resolved["sampler"]["scheduler"] = str(folder / "scheduler")
        mllm = mllm_path or resolved["mllm"]["path"]
        resolved["mllm"]["path"] = str(folder / mllm) if index.get("mllm_copied") and not mllm_path else mllm
        if not Path(resolved["mllm"]["path"]).is_dir():
            raise InputError(f"{folder}: the MLLM it references ({resolved['mllm']['path']}) is not on this machine; pass mllm_path=... (or export with copy_mllm=true).")
        model: UnifiedModel = instantiate(resolved)
        if has_lora(model.dit.transformer):  # a separate LoRA export: its adapter back on the base (never a fresh one)
            adapter = folder / "transformer" / LORA_FOLDER / "adapter_model.safetensors"
            if not adapter.is_file():
                raise InputError(f"{folder}: the model config has LoRA on the DiT but {adapter} is missing; re-export it.")
            load_adapter_state_dict(model.dit.transformer, read_tensors(adapter), str(adapter))
        fix = "Re-export the checkpoint (python -m mingexp.export)."
        parts = [("queries", model.queries, "queries.safetensors"), ("connector", model.connector, "connector/model.safetensors")]
        if model.align is not None:
            parts.append(("align", model.align, "align.safetensors"))
        for name, part, file in parts:
            load_exact(part, read_tensors(folder / file, fix=fix), str(folder / file), fix=fix)
        if index["model"]["mllm"]["path"] != resolved["mllm"]["path"] and not index.get("mllm_copied"):
            cfg["mllm"]["path"] = resolved["mllm"]["path"]
        pipe = cls(model, cfg)
        return pipe.to(device, dtype)

    def to(self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> "MingUniPipeline":
        """Move (and optionally cast, e.g. ``bf16`` on GPU) every part."""
        kwargs = {}
        if device is not None:
            kwargs["device"] = torch.device(device)
        if dtype is not None:
            kwargs["dtype"] = resolve_dtype(dtype, "dtype")
        if kwargs:
            self.model.to(**kwargs)
            self._null = None
        return self

    def compile(self, **compile_kwargs) -> "MingUniPipeline":
        """``torch.compile`` the DiT (the per-step cost); the first call of each shape pays the compilation."""
        self.model.dit = torch.compile(self.model.dit, **compile_kwargs)
        return self

    @property
    def device(self) -> torch.device:
        return self.model.device

    # --------------------------------------------------------------- inference
    def generate(self, prompt: str | Sequence[str], num_images: int = 1, steps: int | None = None, guidance_scale: float | None = None,
                 height: int | None = None, width: int | None = None, seed: int | None = 0, batch_size: int = 16,
                 progress: Callable[[int, int], None] | None = None) -> list[Image.Image]:
        """Text to image: ``num_images`` per prompt, batched; image k of the call uses ``seed + k`` (the seed rule
        of :func:`mingexp.models.generation.generate`: the same seed gives the same image in a training sheet or
        an evaluation). ``progress(done, total)`` follows the sampler's steps."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [self.check_prompt(p, "prompt") for p in prompts for _ in range(int(num_images))]
        return generate(self.model, prompts, seed_range(seed or 0, len(prompts)), batch_size=batch_size, steps=steps,
                        guidance_scale=guidance_scale, height=height, width=width, null=self.null_tokens(), progress=progress)

    def edit(self, image, instruction: str, steps: int | None = None, guidance_scale: float | None = None,
             image_guidance_scale: float | None = None, height: int | None = None, width: int | None = None,
             seed: int | None = 0, progress: Callable[[int, int], None] | None = None) -> Image.Image:
        """Edit ``image`` (path or PIL) by ``instruction``; the source image goes through the MLLM, as in training.

        ``image_guidance_scale`` adds InstructPix2Pix-style image guidance (for models trained with the
        instruction dropped); None = plain guidance on the instruction + image condition.
        """
        source = load_image(image)
        instruction = self.check_prompt(instruction, "instruction", [source])
        return generate(self.model, [instruction], [seed or 0], [[source]], steps=steps, guidance_scale=guidance_scale,
                        image_guidance_scale=image_guidance_scale, height=height, width=width, null=self.null_tokens(),
                        progress=progress)[0]

    def chat(self, images, question: str, max_new_tokens: int = 64, max_time: float | None = None) -> str:
        """Answer ``question`` about ``images`` (one, a list, or None) with the frozen MLLM; ``max_time`` (seconds)
        stops the answer early (transformers' ``MaxTimeCriteria``)."""
        if images is None:
            loaded = []
        else:
            loaded = [load_image(im) for im in (images if isinstance(images, (list, tuple)) else [images])]
        question = self.check_prompt(question, "question", loaded, new_tokens=max_new_tokens, chat=True)
        extra = {"max_time": float(max_time)} if max_time else {}
        return self.model.chat(loaded, question, max_new_tokens=max_new_tokens, **extra)

    def session(self, **defaults) -> "Session":
        """A multi-turn session (generate → edit → edit …, undo, save); ``defaults`` go to every turn."""
        from mingexp.pipeline.session import Session

        return Session(self, **defaults)

"""A local VLM judge, pinned: the same folder, weights, prompts and decoding give the same scores.

The edit benchmarks (GEdit-Bench's VIEScore, ImgEdit's rubric) are scored by a vision-language model. Their users'
numbers drift with the judge (another API model, a content filter, a new endpoint: docs/evaluation.md); here the
judge is a transformers VLM read from a local folder (Qwen2.5-VL-7B/72B-Instruct, or any
``AutoModelForImageTextToText`` checkpoint), decoded greedily, and identified by :class:`JudgeIdentity`: its path,
a digest of its weights, the prompt set's digest, its dtype and decoding. Every result carries the identity, and two
results are only compared under the same one (:func:`same_judge`).

Loading follows mingexp's rules for a part: safetensors only (a pickled folder is refused before anything is
generated), every tensor loaded exactly (:func:`mingexp.io.pretrained.load_pretrained`), ``trust_remote_code`` off
unless the user asks. A folder whose config is not a vision-language model is refused by name. On several GPUs a judge
too large for one is sharded across them (``device=auto``: transformers' ``device_map="auto"``, which needs accelerate).

Inputs: Qwen2-VL / Qwen2.5-VL judges are fed through :class:`~mingexp.models.processor.MLLMProcessor` (the same
tokenisation as the model under test, and no torchvision needed); other families through their ``AutoProcessor``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from PIL import Image

from mingexp.errors import ConfigError

QWEN_VL = ("qwen2_vl", "qwen2_5_vl")  # families fed through MLLMProcessor (no torchvision needed)
CHUNK = 16 * 2**20


# ------------------------------------------------------------------------------------------------ identity
def weights_digest(folder: str | Path) -> str:
    """sha256 over the folder's safetensors files (names and bytes, in name order): what the judge *is*."""
    folder = Path(folder)
    digest = hashlib.sha256()
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"eval.judge.path={folder}: no *.safetensors weights to identify the judge by.")
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def text_digest(texts: Mapping[str, str]) -> str:
    """sha256 of a prompt set (``{name: template}``), independent of the mapping's order."""
    return hashlib.sha256(json.dumps(dict(sorted(texts.items())), ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class JudgeIdentity:
    """What makes two judgements comparable. ``prompts`` names the prompt set and its digest
    (``viescore-tie@<sha256>``); ``weights`` is :func:`weights_digest` of the folder."""

    path: str
    weights: str
    prompts: str
    dtype: str
    decoding: str = "greedy"

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "a result") -> "JudgeIdentity":
        try:
            return cls(**{k: str(data[k]) for k in ("path", "weights", "prompts", "dtype")}, decoding=str(data.get("decoding", "greedy")))
        except (KeyError, TypeError):
            raise ConfigError(f"{source}: no judge identity (path, weights, prompts, dtype); it was not scored by a mingexp judge.") from None

    def differences(self, other: "JudgeIdentity") -> list[str]:
        """The fields in which two identities differ (the path alone may differ: the same weights moved)."""
        return [f"{k}: {getattr(self, k)} vs {getattr(other, k)}" for k in ("weights", "prompts", "dtype", "decoding")
                if getattr(self, k) != getattr(other, k)]


def same_judge(a: JudgeIdentity, b: JudgeIdentity, what: str = "the two results") -> None:
    """Refuse to compare judgements made by different judges (weights, prompts, dtype or decoding), naming them."""
    differences = a.differences(b)
    if differences:
        raise ConfigError(f"{what} were scored by different judges ({'; '.join(differences)}): their scores are not comparable. "
                          "Score both with one judge (score_only=<folder> eval.judge.path=<the same folder>).")


# ------------------------------------------------------------------------------------------------ questions
@dataclass
class Question:
    """One request to the judge: its images and its text, the images before the text or after it (a benchmark's own
    order: VIEScore's local judge puts images first, ImgEdit's text first)."""

    images: list[Image.Image]
    text: str
    images_first: bool = True
    key: str = ""  # the item it belongs to, for the record of unparsable answers


@dataclass
class Answers:
    """The judge's raw answers, in question order, with what it took."""

    texts: list[str]
    seconds: float = 0.0
    tokens: list[int] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ the judge
class VLMJudge:
    """A local vision-language model answering :class:`Question` s greedily, in batches.

    Args:
        path: the judge's folder (``save_pretrained`` layout, safetensors): ``eval.judge.path``.
        dtype: weights' dtype (``bfloat16`` on a GPU; ``float32`` on a CPU).
        device: ``cpu``, ``cuda``, or ``auto`` (sharded across the visible GPUs when more than one).
        max_new_tokens: the answer's budget (GEdit's local Qwen judge: 512).
        batch_size: questions decoded together (left-padded).
        attn_implementation: ``sdpa`` | ``eager`` | ``flash_attention_2`` (with ``.[gpu]``).
        trust_remote_code: let transformers run the folder's own code (off unless asked for).
    """

    def __init__(self, path: str | Path, dtype: str = "bfloat16", device: str = "cpu", max_new_tokens: int = 512, batch_size: int = 4,
                 attn_implementation: str = "sdpa", trust_remote_code: bool = False) -> None:
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

        from mingexp.errors import checkpoint_dir
        from mingexp.utils import resolve_dtype

        from mingexp.io.pretrained import check_safetensors

        self.folder = checkpoint_dir(path, "eval.judge.path", "a vision-language model checkpoint (e.g. Qwen2.5-VL-7B-Instruct)")
        self.dtype_name = str(resolve_dtype(dtype, "eval.judge.dtype")).removeprefix("torch.")
        self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)
        config = AutoConfig.from_pretrained(str(self.folder), trust_remote_code=trust_remote_code)
        if type(config) not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING:
            raise ConfigError(f"eval.judge.path={self.folder}: its config is {type(config).__name__} (model_type {config.model_type!r}), "
                              "not a vision-language model transformers' AutoModelForImageTextToText loads. Pass a VLM folder such as "
                              "Qwen2.5-VL-7B-Instruct.")
        check_safetensors(self.folder, "eval.judge.path")  # pickled weights refused now, before anything is generated
        self.model_type = str(config.model_type)
        self._device, self._trust, self._attn = str(device), bool(trust_remote_code), str(attn_implementation)
        self._model = self._inputs = None
        self._digest: str | None = None

    # ------------------------------------------------------------------ loading
    def load(self) -> "VLMJudge":
        """Load the weights (once): strict, safetensors only, frozen, eval mode."""
        if self._model is not None:
            return self
        from transformers import AutoModelForImageTextToText

        from mingexp.io.pretrained import load_pretrained
        from mingexp.utils import resolve_dtype

        kwargs: dict[str, Any] = {"dtype": resolve_dtype(self.dtype_name, "eval.judge.dtype"), "attn_implementation": self._attn,
                                  "trust_remote_code": self._trust}
        if self._device == "auto" and torch.cuda.device_count() > 1:
            from mingexp.extras import require

            require("accelerate", "sharding", "a judge sharded across GPUs (eval.judge.device=auto)", instead="eval.judge.device=cuda")
            kwargs["device_map"] = "auto"
        model = load_pretrained(AutoModelForImageTextToText.from_pretrained, self.folder, "eval.judge.path", **kwargs)
        if "device_map" not in kwargs:
            model = model.to("cuda" if self._device == "auto" and torch.cuda.is_available() else
                             ("cpu" if self._device == "auto" else self._device))
        from transformers import AutoTokenizer

        self._model = model.eval().requires_grad_(False)
        self._inputs = self._input_builder()
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))  # decodes the answers (loaded once, with the model)
        return self

    def _input_builder(self) -> Callable[[Sequence[Question]], dict]:
        """Questions → the model's batch: MLLMProcessor for Qwen-VL judges, else the folder's AutoProcessor."""
        if self.model_type in QWEN_VL:
            from mingexp.models.processor import IMAGE_MARKER, MLLMProcessor

            processor = MLLMProcessor.from_pretrained(self.folder)

            def build(questions: Sequence[Question]) -> dict:
                prompts = []
                for q in questions:
                    if IMAGE_MARKER in q.text:
                        raise ValueError(f"{q.key}: the question's text holds {IMAGE_MARKER!r}, which the judge's input format reserves.")
                    marks = IMAGE_MARKER * len(q.images)
                    prompts.append(marks + q.text if q.images_first else q.text + marks)
                batch = processor(prompts, [list(q.images) for q in questions], prompt_format="chat")
                return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "pixel_values": batch.pixel_values,
                        "image_grid_thw": batch.image_grid_thw}

            return build
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(str(self.folder), trust_remote_code=self._trust)
        except ImportError as e:
            raise ConfigError(f"eval.judge.path={self.folder}: its processor needs a package that is not installed ({str(e).strip()[:200]}).") from None
        processor.tokenizer.padding_side = "left"

        def build(questions: Sequence[Question]) -> dict:
            texts = []
            for q in questions:
                content = [{"type": "image"}] * len(q.images)
                content = content + [{"type": "text", "text": q.text}] if q.images_first else [{"type": "text", "text": q.text}] + content
                texts.append(processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False))
            return dict(processor(text=texts, images=[list(q.images) for q in questions], padding=True, return_tensors="pt"))

        return build

    # ------------------------------------------------------------------ answering
    @torch.no_grad()
    def ask(self, questions: Sequence[Question], progress: bool = False) -> Answers:
        """Greedy answers to ``questions`` (batched), as text."""
        import time

        from tqdm import tqdm

        self.load()
        tokenizer = self.tokenizer
        device = next(self._model.parameters()).device
        texts: list[str] = []
        lengths: list[int] = []
        start = time.perf_counter()
        batches = range(0, len(questions), self.batch_size)
        for i in tqdm(batches, desc="judge", unit="batch", disable=not progress):
            batch = self._inputs(questions[i: i + self.batch_size])
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items() if v is not None}
            if "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(self._model.dtype)
            out = self._model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens,
                                       pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
            new = out[:, batch["input_ids"].shape[1]:]
            for row in new:
                texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
                lengths.append(int((row != (tokenizer.pad_token_id or -1)).sum()))
        return Answers(texts, time.perf_counter() - start, lengths)

    @torch.no_grad()
    def yes_probability(self, questions: Sequence[Question], normalise: bool = True) -> torch.Tensor:
        """(N,) the judge's probability that its answer starts with yes (:func:`yes_probability`), batched."""
        self.load()
        out = [yes_probability(self._model, self.tokenizer, self._inputs(questions[i: i + self.batch_size]), normalise)
               for i in range(0, len(questions), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0)

    # ------------------------------------------------------------------ identity
    def identity(self, prompts: str) -> JudgeIdentity:
        """This judge's identity with the prompt set ``prompts`` (``<name>@<digest>``)."""
        if self._digest is None:
            self._digest = weights_digest(self.folder)
        return JudgeIdentity(str(self.folder.resolve()), self._digest, prompts, self.dtype_name)


YES, NO = ("yes", "Yes", "YES"), ("no", "No", "NO")


def answer_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """The first token of each spelling of an answer word, without duplicates."""
    ids = []
    for w in words:
        tokens = tokenizer(w, add_special_tokens=False).input_ids
        if tokens and tokens[0] not in ids:
            ids.append(int(tokens[0]))
    return ids


@torch.no_grad()
def yes_probability(model, tokenizer, batch: dict, normalise: bool = True) -> torch.Tensor:
    """(B,) P(the answer's first token is yes) from one forward pass over a left-padded chat batch ending in the
    assistant prefix: the softmax mass on yes's spellings, divided by that on yes's and no's when ``normalise``
    (the judge is asked a yes / no question; what it puts elsewhere is not an answer)."""
    device = next(model.parameters()).device
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items() if v is not None}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    image_token = getattr(model.config, "image_token_id", None)
    if image_token is not None and "mm_token_type_ids" not in batch:
        batch["mm_token_type_ids"] = (batch["input_ids"] == image_token).int()
    if hasattr(model, "model") and hasattr(model.model, "rope_deltas"):
        model.model.rope_deltas = None  # a previous generate() leaves cached rope deltas behind
    probs = model(**batch).logits[:, -1].float().softmax(-1)
    yes = probs[:, answer_token_ids(tokenizer, YES)].sum(-1)
    if not normalise:
        return yes.cpu()
    no = probs[:, answer_token_ids(tokenizer, NO)].sum(-1)
    return (yes / (yes + no).clamp_min(1e-12)).cpu()

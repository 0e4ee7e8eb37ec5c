"""Fine-tuning the (toy) MLLM for understanding, before it is frozen for generation.

The paper freezes a pretrained M2-omni that already understands images. The toy world has no such model,
so ``+experiment=toy_mllm`` first trains the tiny Qwen2.5-VL (written by :mod:`mingexp.models.tiny`) with
its language-model loss on the shapes world's questions and captions, then writes it with
``save_pretrained`` (plus tokenizer, chat template and image processor), atomically, where ``model=toy``
loads it frozen.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import lightning as L
import torch

from mingexp.data.batch import Batch
from mingexp.errors import checkpoint_dir
from mingexp.lit.module import warmup_cosine_schedule


def ensure_base(path: str | Path, **sizes) -> Path:
    """The untrained tiny MLLM at ``path``, written by the checkpoint writer if it is not there yet."""
    from mingexp.models.tiny import write_tiny_mllm

    path = Path(path)
    if not (path / "config.json").is_file():
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        write_tiny_mllm(tmp, **sizes)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return path


class MLLMFinetuneModule(L.LightningModule):
    """Language-model loss on vqa batches (answers only); writes the result with ``save_pretrained``.

    Args:
        base_path: the MLLM to start from (created by the tiny writer when absent and ``base_sizes`` given).
        out_path: where the fine-tuned MLLM is written at the end of training (atomically).
        optimizer: optimizer partial; lr / warmup_steps / min_lr_ratio: the schedule.
        base_sizes: tiny-writer sizes for a missing base (hidden_size, num_layers, ...).
    """

    def __init__(
        self,
        base_path: str,
        out_path: str,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr: float = 1e-3,
        warmup_steps: int = 50,
        min_lr_ratio: float = 0.05,
        base_sizes: dict | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoModelForImageTextToText

        base = ensure_base(base_path, **(base_sizes or {})) if base_sizes is not None else checkpoint_dir(base_path, "module.base_path", "an MLLM checkpoint")
        self.base_path, self.out_path = Path(base), Path(out_path)
        self.model = AutoModelForImageTextToText.from_pretrained(str(self.base_path), use_safetensors=True)
        self.model.train()
        self.optimizer_factory, self.lr = optimizer, float(lr)
        self.warmup_steps, self.min_lr_ratio = int(warmup_steps), float(min_lr_ratio)
        self.nonfinite_streak = 0  # no NaN guard in this stage (mingexp.lit.contract.TrainableModule)

    def model_spec(self) -> None:
        """No image model: the datamodule keeps its configured resolution."""
        return None

    def memory_estimate(self, batch_size: int) -> None:
        """Not estimated for the toy-MLLM stage (a few MB)."""
        return None

    def configure_optimizers(self):
        optimizer = self.optimizer_factory([p for p in self.model.parameters() if p.requires_grad], lr=self.lr)
        return warmup_cosine_schedule(self, optimizer, self.warmup_steps, self.min_lr_ratio)

    def training_step(self, batch: Batch, batch_idx: int):
        inputs = batch.mllm
        if inputs.labels is None:
            raise ValueError("the toy MLLM stage needs understanding (vqa) batches with answer labels: use data=shapes_vqa")
        out = self.model(
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask,
            pixel_values=inputs.pixel_values,
            image_grid_thw=inputs.image_grid_thw,
            mm_token_type_ids=(inputs.input_ids == self.model.config.image_token_id).int(),
            labels=inputs.labels,
        )
        self.log("train/lm_loss", out.loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch))
        return out.loss

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            self.save(self.out_path)

    def save(self, out: Path) -> Path:
        """``save_pretrained`` the model next to the base's tokenizer / template / image processor, atomically."""
        from transformers import AutoImageProcessor, AutoTokenizer

        out = Path(out)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(str(tmp), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(self.base_path)).save_pretrained(str(tmp))
        AutoImageProcessor.from_pretrained(str(self.base_path)).save_pretrained(str(tmp))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        self.print(f"[mingexp] fine-tuned MLLM written to {out}")
        return out

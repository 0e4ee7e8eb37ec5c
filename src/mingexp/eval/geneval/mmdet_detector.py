"""The official detector: mmdet 2.x Mask2Former (GenEval's own ``evaluate_images.py`` setup), optional.

Only usable where the user has installed mmdet/mmcv (GenEval's environment: mmdet 2.x, mmcv-full 1.x;
Hopper GPUs need mmcv rebuilt). It produces the same :class:`Detection` s, so the rules, the summary and
the folder layout are shared; colours still come from a CLIP folder through transformers. To compare
with the official scorer, run it on the same folder (``--score-only``) and compare per-image results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mingexp.eval.geneval.mask2former import COCO_CLASSES, Mask2FormerDetector
from mingexp.eval.geneval.rules import Detection
from mingexp.utils import to_rgb


class MMDetDetector(Mask2FormerDetector):
    """``init_detector(config, checkpoint)`` of mmdet; CLIP colours as in :class:`Mask2FormerDetector`."""

    def __init__(self, config: str | Path, checkpoint: str | Path, clip_path: str | Path, device: str = "cpu", dtype: str = "float32") -> None:
        try:
            from mmdet.apis import inference_detector, init_detector
        except ImportError as e:
            raise ImportError(
                "eval.detector=mmdet needs mmdet 2.x and mmcv-full (GenEval's environment), which mingexp does not install. "
                "Use eval.detector=mask2former (transformers) or install them following GenEval's README."
            ) from e
        import torch
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        self._infer = inference_detector
        self.model = init_detector(str(config), str(checkpoint), device=device)
        self.device, self.dtype = torch.device(device), getattr(torch, dtype)
        self.clip_tokenizer = AutoTokenizer.from_pretrained(str(clip_path))
        self.clip_images = AutoImageProcessor.from_pretrained(str(clip_path))
        self.clip = CLIPModel.from_pretrained(str(clip_path), use_safetensors=True).to(self.device).eval()
        self.classes, self._colour_heads = COCO_CLASSES, {}

    def detect(self, image) -> list[Detection]:
        bbox, segm = self._infer(self.model, np.asarray(to_rgb(image))[..., ::-1])
        out = []
        for index, name in enumerate(self.classes):
            for row, mask in zip(bbox[index], segm[index]):
                out.append(Detection(name, float(row[4]), tuple(map(float, row[:4])), np.asarray(mask, dtype=bool)))
        return out

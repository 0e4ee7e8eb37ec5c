"""GenEval's detector and colour classifier through transformers (no mmdet, runs on any GPU or the CPU).

* Instance segmentation: ``Mask2FormerForUniversalSegmentation`` (default checkpoint
  ``facebook/mask2former-swin-small-coco-instance``, the architecture GenEval uses), post-processed as
  mmdet's Mask2Former does: top-k over queries × classes, score = class probability × mean mask
  probability, binary masks, boxes from masks (+1). COCO classes are mapped **by index** onto GenEval's
  names (three differ: computer mouse, tv remote, computer keyboard).
* Colours: ``CLIPModel`` (GenEval: OpenAI ViT-L/14) zero-shot over the ten colours with GenEval's three
  templates, text embeddings averaged per colour and renormalised; each object is its mask composited over
  solid #999999, cropped to its box, then CLIP's own preprocessing.

Differences from the official scorer that remain: transformers upsamples masks from 384 px with nearest
neighbours where mmdet resizes logits bilinearly, and weights are converted checkpoints. Agreement with the
official scorer is measured by scoring one folder with both (see ``docs/evaluation.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from mingexp.errors import checkpoint_dir
from mingexp.vocab import COLORS
from mingexp.eval.geneval.rules import Detection, box_from_mask
from mingexp.utils import resolve_dtype, to_rgb

# GenEval's object_names.txt: the 80 COCO instance classes in COCO's index order, three renamed.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
COLOR_TEMPLATES = ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")
CROP_BACKGROUND = "#999999"


class Mask2FormerDetector:
    """transformers Mask2Former + CLIP, by path (``eval.detector.path``, ``eval.detector.clip_path``).

    Args:
        path: a Mask2Former COCO instance-segmentation folder.
        clip_path: a CLIP folder (model + processor) for the colour check.
        score_floor: post-processing keeps instances scoring at least this (GenEval's own 0.3 / 0.9
            thresholds are applied afterwards by the rules; keep it below 0.3).
        class_names: names by class index (default GenEval's COCO names).
    """

    def __init__(self, path: str | Path, clip_path: str | Path, device: str = "cpu", dtype: str = "float32",
                 score_floor: float = 0.05, class_names: Sequence[str] = COCO_CLASSES) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, Mask2FormerForUniversalSegmentation

        folder = checkpoint_dir(path, "eval.detector.path", "a Mask2Former instance-segmentation checkpoint")
        clip_folder = checkpoint_dir(clip_path, "eval.detector.clip_path", "a CLIP checkpoint")
        self.device, self.dtype = torch.device(device), resolve_dtype(dtype, "eval.detector.dtype")
        self.processor = AutoImageProcessor.from_pretrained(str(folder))
        self.model = Mask2FormerForUniversalSegmentation.from_pretrained(str(folder), dtype=self.dtype, use_safetensors=True).to(self.device).eval()
        self.clip_tokenizer = AutoTokenizer.from_pretrained(str(clip_folder))
        self.clip_images = AutoImageProcessor.from_pretrained(str(clip_folder))
        self.clip = CLIPModel.from_pretrained(str(clip_folder), dtype=self.dtype, use_safetensors=True).to(self.device).eval()
        n = self.model.config.num_labels
        if n != len(class_names):
            raise ValueError(f"eval.detector.path={path}: {n} classes, but {len(class_names)} class names are given (GenEval maps the 80 COCO classes by index).")
        self.classes, self.score_floor = tuple(class_names), float(score_floor)
        self._colour_heads: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def detect(self, image: Image.Image) -> list[Detection]:
        image = to_rgb(image)
        inputs = self.processor(images=image, return_tensors="pt").to(self.device)
        outputs = self.model(pixel_values=inputs["pixel_values"].to(self.dtype))
        result = self.processor.post_process_instance_segmentation(
            outputs, threshold=self.score_floor, target_sizes=[image.size[::-1]], return_binary_maps=True
        )[0]
        segments = result["segments_info"]
        if not segments:
            return []
        maps = result["segmentation"].cpu().numpy().astype(bool)  # (n, H, W)
        return [Detection(self.classes[s["label_id"]], float(s["score"]), box_from_mask(m), m) for s, m in zip(segments, maps)]

    @torch.no_grad()
    def _colour_head(self, classname: str) -> torch.Tensor:
        """(10, D) normalised text embeddings: the three templates averaged per colour, renormalised."""
        if classname not in self._colour_heads:
            texts = [t.format(c=c, cls=classname) for c in COLORS for t in COLOR_TEMPLATES]
            tok = self.clip_tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
            emb = self.clip.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
            emb = getattr(emb, "pooler_output", emb)
            emb = torch.nn.functional.normalize(emb.float(), dim=-1).view(len(COLORS), len(COLOR_TEMPLATES), -1).mean(1)
            self._colour_heads[classname] = torch.nn.functional.normalize(emb, dim=-1)
        return self._colour_heads[classname]

    @torch.no_grad()
    def colours(self, image: Image.Image, detections: Sequence[Detection], classname: str) -> list[str]:
        """GenEval's colour of each detection (mask over #999999, crop to box, CLIP zero-shot)."""
        image = to_rgb(image)
        blank = Image.new("RGB", image.size, CROP_BACKGROUND)
        crops = []
        for d in detections:
            crop = Image.composite(image, blank, Image.fromarray(d.mask)) if d.mask is not None else image
            crops.append(crop.crop(tuple(int(round(v)) for v in d.box)))
        pixels = self.clip_images(images=crops, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
        emb = self.clip.get_image_features(pixel_values=pixels)
        emb = torch.nn.functional.normalize(getattr(emb, "pooler_output", emb).float(), dim=-1)
        return [COLORS[i] for i in (emb @ self._colour_head(classname).T).argmax(-1).tolist()]

"""GenEval (Ghosh et al., 2023) reproduced rule for rule, with pluggable detectors.

* :mod:`.metadata` reads the official ``evaluation_metadata.jsonl`` (or a rewritten-prompt file);
* :mod:`.rules` holds the official decision rules, written once over a shared detection format;
* :mod:`.detectors` provides the detectors: the toy world's exact one, transformers Mask2Former + CLIP,
  and the official mmdet Mask2Former when mmdet is installed;
* :mod:`.protocol` generates the official folder layout and scores a folder of images;
* :mod:`.summary` turns per-image results into the official summary.
"""

from mingexp.eval.geneval.metadata import load_metadata
from mingexp.eval.geneval.rules import Detection, evaluate_image
from mingexp.eval.geneval.summary import summarize

__all__ = ["Detection", "evaluate_image", "load_metadata", "summarize"]

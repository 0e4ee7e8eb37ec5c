"""The official GenEval summary (``evaluation/summary_scores.py``) plus the counts it leaves implicit.

Per tag: the mean correctness of its images. Overall = the unweighted mean of the tag means (so the six
tags weigh equally whatever their prompt counts). Also "% correct images" (over all images) and
"% correct prompts" (a prompt is correct when any of its images is). Missing images are counted as
incorrect and reported (``missing``), never dropped from a denominator.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Mapping


def summarize(results: Iterable[Mapping], track: str = "official") -> dict:
    """``results``: one dict per image with ``tag``, ``correct``, ``prompt_index`` (and ``missing``)."""
    results = list(results)
    if not results:
        raise ValueError("no GenEval results to summarise")
    by_tag: "OrderedDict[str, list[bool]]" = OrderedDict()
    by_prompt: dict[int, list[bool]] = {}
    for r in results:
        by_tag.setdefault(r["tag"], []).append(bool(r["correct"]))
        by_prompt.setdefault(int(r.get("prompt_index", len(by_prompt))), []).append(bool(r["correct"]))
    tags = {tag: sum(v) / len(v) for tag, v in by_tag.items()}
    return {
        "track": track,
        "overall": sum(tags.values()) / len(tags),
        "tags": tags,
        "images": len(results),
        "prompts": len(by_prompt),
        "missing": sum(1 for r in results if r.get("missing")),
        "correct_images": sum(r["correct"] for r in results) / len(results),
        "correct_prompts": sum(any(v) for v in by_prompt.values()) / len(by_prompt),
    }


def overall_from_tags(tag_scores: Mapping[str, float]) -> float:
    """Overall from per-tag scores alone (the unweighted mean)."""
    return sum(tag_scores.values()) / len(tag_scores)


def format_summary(summary: Mapping) -> str:
    lines = [f"GenEval ({summary['track']} track): {summary['images']} images, {summary['prompts']} prompts, {summary['missing']} missing"]
    for tag, value in summary["tags"].items():
        lines.append(f"  {tag:<14} {value:.4f}")
    lines.append(f"  {'overall':<14} {summary['overall']:.5f}")
    lines.append(f"  % correct images {summary['correct_images']:.2%}   % correct prompts {summary['correct_prompts']:.2%}")
    return "\n".join(lines)

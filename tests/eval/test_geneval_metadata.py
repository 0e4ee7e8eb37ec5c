"""Reading GenEval metadata: the official file (553 prompts) and bad files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mingexp.errors import ConfigError
from mingexp.eval.geneval.metadata import load_metadata, tag_counts

REPO = Path(__file__).resolve().parents[2]


def official_file() -> Path | None:
    """The official file from ../shared (never copied into the repo), or $GENEVAL_METADATA."""
    for candidate in (os.environ.get("GENEVAL_METADATA"), REPO.parent / "shared/reference/geneval/evaluation_metadata.jsonl",
                      Path("/work/shared/reference/geneval/evaluation_metadata.jsonl")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.mark.skipif(official_file() is None, reason="the official GenEval metadata is not on this machine (set GENEVAL_METADATA)")
def test_official_metadata_parses_with_the_published_tag_counts():
    prompts, track = load_metadata(official_file())
    assert len(prompts) == 553 and track == "official"
    assert tag_counts(prompts) == {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100, "color_attr": 100}
    counting = [p for p in prompts if p["tag"] == "counting"]
    assert all(p["exclude"][0]["count"] == p["include"][0]["count"] + 1 for p in counting)


@pytest.mark.skipif(official_file() is None, reason="the official GenEval metadata is not on this machine")
def test_rewritten_prompts_are_labelled_as_another_track(tmp_path):
    prompts, _ = load_metadata(official_file())
    long = tmp_path / "evaluation_metadata_long.jsonl"
    long.write_text("".join(json.dumps({**p, "prompt": "An image showing " + p["prompt"][11:]}) + "\n" for p in prompts))
    assert load_metadata(long)[1] == "rewritten"
    assert load_metadata(long, track="long")[1] == "long"


def test_bad_metadata_names_file_line_and_key(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text(json.dumps({"tag": "colors", "prompt": "x"}) + "\n")
    with pytest.raises(ConfigError, match=r"m.jsonl:1: missing key 'include'"):
        load_metadata(bad)
    bad.write_text(json.dumps({"tag": "colors", "include": [{"class": "cat", "count": 1, "color": "teal"}], "prompt": "x"}) + "\n")
    with pytest.raises(ConfigError, match="teal"):
        load_metadata(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_metadata(tmp_path / "absent.jsonl")


def test_shapes_suite_is_in_the_geneval_schema(tmp_path):
    from mingexp.data.shapes import geneval_shapes_suite

    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in geneval_shapes_suite()))
    prompts, track = load_metadata(path)
    assert track == "custom" and len(prompts) == 299
    assert tag_counts(prompts) == {"single_object": 6, "two_object": 15, "counting": 18, "colors": 60, "position": 100, "color_attr": 100}

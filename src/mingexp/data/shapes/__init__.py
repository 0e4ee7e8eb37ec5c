"""The shapes toy world: procedural scenes with exact ground truth, in every task's shard format.

A scene is a square canvas (side ``resolution``, 32..512; background RGB(127,127,127)) holding objects of
six classes drawn filled and anti-aliased in the ten GenEval colours. Objects stand in **slots**: the canvas
is a ``GRID`` × ``GRID`` lattice of cells (2 × 2), and an object is a square box of side ``OBJECT_FRACTION``
(0.4) of the canvas centred in its cell, at most one per cell (13 px at the toy model's 32 px, where each
cell is one 16-px patch of its DiT). Format 4 chose this (experiments/toy_conditioning, fifth round):
boxes of 15–35 % anywhere on the canvas (format 3) put 5–11 px shapes at hundreds of sub-patch offsets, which
the toy could not learn in its budget, and left the ground truth ambiguous at 32 px (ceiling 0.82). The
lattice still gives every GenEval skill its meaning: one to four objects, left / right / above / below
(a diagonal gives two relations, as GenEval's rule says), colours and colour attribution.

* ``circle``: the inscribed circle; ``square``: the box; ``triangle``: apex at top centre, base along the
  bottom edge; ``diamond``: vertices at the four edge midpoints; ``star``: five-pointed, apex up, inner
  radius 0.4 × outer; ``cross``: a plus sign with arms 1/3 of the box wide.

Captions use GenEval's phrasing and every scene stores GenEval's ``include`` / ``exclude`` metadata, so the
GenEval scorer runs on this world unchanged (relations follow GenEval's rule, :func:`relations`).

:func:`write_shapes` writes shards for t2i (reconstruction reads those too), edit (add / remove /
recolour / move), multi-turn edit chains (2–5 steps), style (outline / inverted / grayscale / pixelated),
vqa (colour, count, relation and caption questions) and textqa (questions about a caption given as text,
no image), a held-out split of scenes never used for training, and the GenEval-Shapes prompt suite
(``evaluation_metadata.jsonl``, the six GenEval tags).

**Held-out compositions** (:data:`HELDOUT_COLOR_SHAPES`, :data:`HELDOUT_SHAPE_PAIRS`): 10 of the 60 colour ×
shape pairs and 3 of the 15 shape pairs appear in no training split, neither drawn nor named; the suite marks
the prompts that name one ``"split": "unseen"``, and GenEval-Shapes reports them as their own track.
``data=shapes`` calls :func:`prepare_shapes`, which writes all that once and reuses it afterwards.

One file per responsibility: :mod:`~mingexp.data.shapes.scene` (objects, slots, geometry, rendering, styles),
:mod:`~mingexp.data.shapes.language` (captions, GenEval prompts and their scenes, edits, questions, the
held-out compositions), :mod:`~mingexp.data.shapes.world` (shards on disk, ``prepare_shapes``). This package
names their public parts.
"""

from __future__ import annotations

from mingexp.data.shapes.language import (
    GENEVAL_CAPTION_FRACTION,
    HELDOUT_COLOR_SHAPES,
    HELDOUT_SHAPE_PAIRS,
    NUMBER_WORDS,
    caption_questions,
    composes_unseen,
    describe,
    edit_chain,
    edit_scene,
    geneval_shapes_suite,
    is_trainable,
    plural,
    prompt_metadata,
    prompt_split,
    questions,
    sample_sheet,
    scene_for,
    t2i_example,
    with_article,
    write_geneval_shapes_metadata,
)
from mingexp.data.shapes.scene import (
    BACKGROUND,
    COLORS,
    GRID,
    OBJECT_FRACTION,
    SHAPES,
    STYLES,
    SUPERSAMPLE,
    Scene,
    ShapeObject,
    object_counts,
    place,
    polygon,
    random_scene,
    relations,
    render,
    slot_boxes,
    slot_of,
    stylise,
)
from mingexp.data.shapes.world import (
    DEFAULT_COUNTS,
    FORMAT_VERSION,
    LEGIBLE_CEILING,
    MIN_MODEL_RESOLUTION,
    check_model_resolution,
    main,
    prepare_shapes,
    write_shapes,
)
from mingexp.vocab import RELATIONS, TAGS

__all__ = [
    "BACKGROUND", "COLORS", "DEFAULT_COUNTS", "FORMAT_VERSION", "GENEVAL_CAPTION_FRACTION", "GRID", "HELDOUT_COLOR_SHAPES",
    "HELDOUT_SHAPE_PAIRS", "LEGIBLE_CEILING", "MIN_MODEL_RESOLUTION", "NUMBER_WORDS", "OBJECT_FRACTION", "RELATIONS", "SHAPES", "STYLES",
    "SUPERSAMPLE", "TAGS", "Scene", "ShapeObject", "caption_questions", "check_model_resolution", "composes_unseen", "describe",
    "edit_chain", "edit_scene", "geneval_shapes_suite", "is_trainable", "main", "object_counts", "place", "plural", "polygon",
    "prepare_shapes", "prompt_metadata", "prompt_split", "questions", "random_scene", "relations", "render", "sample_sheet", "scene_for",
    "slot_boxes", "slot_of", "stylise", "t2i_example", "with_article", "write_geneval_shapes_metadata", "write_shapes",
]

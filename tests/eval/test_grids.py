"""The evaluation grids: labelled, bordered cells per example (source / target / output), framed GenEval images, each
example's prompt or instruction under it with its verdict."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mingexp.eval.base import Example
from mingexp.eval.callbacks import pair_grid
from mingexp.eval.edit import EditEval
from mingexp.eval.recon import ReconEval

CELL = 96


def solid(rgb) -> Image.Image:
    return Image.new("RGB", (16, 16), rgb)


def test_edit_examples_show_source_target_and_output_in_labelled_bordered_cells():
    examples = [(solid((255, 0, 0)), solid((0, 0, 255)), solid((0, 255, 0)))] * 3
    grid = np.asarray(pair_grid(examples, EditEval.example_labels, cell=CELL, columns=2))
    header, tile_w = 14, 3 * CELL + 4
    assert grid.shape == (header + 2 * (CELL + 4), 2 * tile_w, 3)
    # the three images in order, inside their cells
    for k, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        assert tuple(grid[header + CELL // 2, k * CELL + CELL // 2]) == colour
    # a grey border around every cell, white between the tiles
    for k in range(3):
        assert tuple(grid[header + CELL // 2, k * CELL]) == (128, 128, 128)
        assert tuple(grid[header, k * CELL + CELL // 2]) == (128, 128, 128)
    assert tuple(grid[header + CELL // 2, 3 * CELL + 1]) == (255, 255, 255)
    # a label over each cell of each column of tiles: dark text pixels in the header row above each cell
    for column in range(2):
        for k in range(3):
            x0 = column * tile_w + k * CELL
            assert (grid[:header, x0 : x0 + CELL] < 100).any(), (column, k)


def test_recon_examples_are_labelled_and_geneval_images_framed_by_correctness():
    grid = np.asarray(pair_grid([(solid((9, 9, 9)), solid((200, 200, 0)))], ReconEval.example_labels, cell=CELL))
    assert grid.shape == (14 + CELL + 4, 2 * CELL + 4, 3) and (grid[:14, :CELL] < 100).any() and (grid[:14, CELL:2 * CELL] < 100).any()
    framed = np.asarray(pair_grid([Example((solid((9, 9, 9)),), ok=True), Example((solid((9, 9, 9)),), ok=False)], (), cell=CELL))
    assert framed.shape == (CELL, 2 * CELL, 3)  # no labels, no captions: no header, no caption rows
    assert tuple(framed[0, CELL // 2]) == (0, 128, 0) and tuple(framed[0, CELL + CELL // 2]) == (255, 0, 0)


def test_each_example_shows_its_prompt_and_verdict_under_the_images():
    examples = [Example((solid((255, 0, 0)),), "a photo of a red circle", True), Example((solid((0, 0, 255)),), "make it blue", False)]
    grid = np.asarray(pair_grid(examples, (), cell=CELL, caption_lines=2))
    text_h = 11 * 2 + 2
    assert grid.shape == (CELL + text_h + 4, 2 * (CELL + 4), 3)
    for column in range(2):  # dark caption text under each image, inside the tile's verdict frame
        x0 = column * (CELL + 4)
        assert (grid[CELL + 2 : CELL + text_h - 2, x0 + 4 : x0 + CELL - 4] < 100).any(), column
    assert tuple(grid[CELL + text_h - 1, CELL // 2]) == (0, 128, 0) and tuple(grid[CELL + text_h - 1, CELL + 4 + CELL // 2]) == (255, 0, 0)

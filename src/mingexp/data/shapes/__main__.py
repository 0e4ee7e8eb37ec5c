"""``python -m mingexp.data.shapes out=<folder> [resolution=64 ...]``: write a shapes world (see :mod:`mingexp.data.shapes.world`)."""

from mingexp.data.shapes.world import main

main()

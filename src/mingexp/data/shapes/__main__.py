"""``python -m mingexp.data.shapes OUT [...]``: write a shapes world (see :mod:`mingexp.data.shapes.world`)."""

from mingexp.data.shapes.world import main

main()

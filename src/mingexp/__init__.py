"""mingexp: train, ablate and evaluate Ming-Lite-Uni-style unified multimodal models.

Nothing is imported here on purpose (no import-time side effects): import the sub-packages you need,
e.g. ``from mingexp.models import UnifiedModel``.
"""

__version__ = "0.1.0"

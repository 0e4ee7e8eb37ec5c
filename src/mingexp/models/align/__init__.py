"""Multi-scale representation alignment (Ming-Lite-Uni §2.1): one class per reading, chosen by ``_target_``.

``semantic`` (:class:`~mingexp.models.align.semantic.SemanticAlignment`, the paper's words, default) and
``latent`` (:class:`~mingexp.models.align.latent.LatentAlignment`, the released code's unused mid-block
head). ``model/align=<reading>`` picks one; ``model.align.weight=0`` builds no head and taps no block.
"""

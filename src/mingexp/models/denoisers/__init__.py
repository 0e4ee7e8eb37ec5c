"""Denoisers: every diffusers decoder behind one seam (:class:`~mingexp.models.denoisers.base.Denoiser`).

One adapter per family: ``sana`` (SANA, the paper's and the release's decoder), ``sd3`` (the MMDiT of
SD3 / SD3.5). ``model/dit=<family>`` chooses one; ``docs/architecture.md`` says how to add another.
"""

"""Flow-matching maths (interpolation, timestep sampling, condition dropout) and the sampler."""

from mingexp.diffusion.flow import ConditionDropout, FlowMatching
from mingexp.diffusion.sampler import FlowSampler

__all__ = ["ConditionDropout", "FlowMatching", "FlowSampler"]

"""Rewards as ``_target_`` plug-ins with one call: ``reward(images, prompts, metadata) -> Scores`` (scores in [0, 1]
per image, plus named components). :class:`~mingexp.rl.rewards.base.WeightedSum` combines them."""

from mingexp.rl.rewards.base import Reward, Scores, WeightedSum, check_scores

__all__ = ["Reward", "Scores", "WeightedSum", "check_scores"]

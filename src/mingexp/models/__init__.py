"""The model core: frozen MLLM, multi-scale queries, connector, denoiser (SANA, SD3: denoisers/), VAE, alignment (align/); see unified.py."""

from mingexp.models.processor import MLLMInputs, MLLMProcessor
from mingexp.models.unified import Condition, ModelOutput, UnifiedModel, build_model

__all__ = ["Condition", "MLLMInputs", "MLLMProcessor", "ModelOutput", "UnifiedModel", "build_model"]

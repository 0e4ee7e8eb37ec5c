"""Lightning wrappers: the unified model's training module, the toy MLLM's fine-tuning module, EMA, callbacks."""

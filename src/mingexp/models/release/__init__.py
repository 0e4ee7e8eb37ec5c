"""The released Ming-Lite-Uni (``inclusionAI/Ming-Lite-Uni``) loaded as it is published, into mingexp's parts.

The released folder (code: ``Ming-unify/Ming_Uni`` of the inclusionAI/Ming GitHub repository)::

    qwen2_5_vit/            Qwen2.5 vision transformer whose merger outputs 8192 wide      → MLLM (release/mllm.py)
    qwen2_5_llm/            tokenizer + Qwen2 causal LM (hidden 3584), run with 3-D M-RoPE  → MLLM, processor
    connector/              a Qwen2 causal LM (Qwen2.5-0.5B shape), used bidirectionally    → Connector (path)
    mlp/model.safetensors   the glue between them (every key: io/release.py)           → build_released
    transformer/            diffusers SanaTransformer2DModel                                → denoisers/sana_release.py
    vae/                    diffusers AutoencoderDC                                         → DCAE (path)
    scheduler/              the shipped scheduler config                                    → (read by upstream's Euler)

``model=ming_lite_uni_release model.path=<folder>`` composes those parts (``conf/model/ming_lite_uni_release.yaml``);
:func:`~mingexp.io.release.build_released` assembles them with ``build_model`` and loads
``mlp/model.safetensors`` strictly. The token protocol (special tokens, template, image size) is
:class:`~mingexp.models.release.processor.ReleasedProcessor`.
"""

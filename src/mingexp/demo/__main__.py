"""``python -m mingexp.demo model=<export folder or run checkpoint> [host=127.0.0.1] [port=7860] [share=false]``

Loads the model once (an export written by ``python -m mingexp.export``, or a run's ``.ckpt``, rebuilt from the
run's config beside it as ``export`` does) and serves the page of :mod:`mingexp.demo.app` until interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mingexp.cli_args import boolean, parse
from mingexp.demo.actions import DemoLimits
from mingexp.pipeline.images import MAX_PIXELS

LIMITS = DemoLimits()
SPEC = {
    "model": (str, ...),
    "host": (str, "127.0.0.1"),
    "port": (int, 7860),
    "share": (boolean, False),
    "device": (str, "cpu"),
    "dtype": (str, None),
    "mllm_path": (str, None),
    "max_pixels": (int, MAX_PIXELS),
    # what one visitor may take (mingexp.demo.actions.DemoLimits); the scratch disk and the sessions held
    "max_turns": (int, LIMITS.max_turns),
    "max_session_pixels": (int, LIMITS.max_session_pixels),
    "max_text": (int, LIMITS.max_text),
    "max_session_mb": (int, LIMITS.max_session_bytes // 2**20),
    "time_budget": (float, LIMITS.time_budget),
    "max_new_tokens": (int, LIMITS.max_new_tokens),
    "max_prompt_tokens": (int, None),
    "max_temp_mb": (int, 2048),
    "max_sessions": (int, 32),
    # loader flags: yours to give, never taken from the folder (mingexp.untrusted)
    "trust_remote_code": (boolean, False),
    "attn_implementation": (str, "sdpa"),
}


def load_pipeline(model: str, device: str = "cpu", dtype: str | None = None, mllm_path: str | None = None,
                  trust_remote_code: bool = False, attn_implementation: str = "sdpa"):
    """An export folder, or a run checkpoint (``.ckpt``: the model rebuilt from its run's config, EMA weights when
    it has them), as a :class:`~mingexp.pipeline.MingUniPipeline`. Anything else is a message naming the path."""
    from mingexp.pipeline import InputError, MingUniPipeline

    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".ckpt":
        from hydra import compose, initialize

        from mingexp.evaluate import load_model, model_config

        flags = [f"model.mllm.trust_remote_code={str(trust_remote_code).lower()}", f"model.mllm.attn_implementation={attn_implementation}"]
        with initialize(version_base="1.3", config_path="../../../conf"):
            cfg = compose("export", overrides=[f"ckpt_path={path.resolve()}", "out=unused", *flags])
        config = model_config(cfg)
        return MingUniPipeline(load_model(cfg, config), config).to(device, dtype)
    if not path.is_dir():
        raise InputError(f"model={model}: no such folder or .ckpt file. Pass an export (python -m mingexp.export ...) or a run's "
                         "checkpoints/last.ckpt.")
    return MingUniPipeline.from_pretrained(path, device=device, dtype=dtype, mllm_path=mllm_path, trust_remote_code=trust_remote_code,
                                           attn_implementation=attn_implementation)


def main(argv: list[str] | None = None) -> None:
    from mingexp.demo.actions import Demo
    from mingexp.demo.app import build_app, launch
    from mingexp.demo.scratch import Scratch
    from mingexp.errors import ConfigError
    from mingexp.pipeline import InputError

    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "demo")
    try:
        pipe = load_pipeline(args["model"], args["device"], args["dtype"], args["mllm_path"], args["trust_remote_code"],
                             args["attn_implementation"])
    except (InputError, ConfigError) as e:
        raise SystemExit(f"demo: {e}") from None
    # the reproducing command lines name an export (the generate CLI reads those, not run checkpoints)
    ref = args["model"] if Path(args["model"]).is_dir() else f"<export of {args['model']}>"
    pipe.max_prompt_tokens = args["max_prompt_tokens"]
    limits = DemoLimits(max_turns=args["max_turns"], max_session_pixels=args["max_session_pixels"], max_text=args["max_text"],
                        max_session_bytes=args["max_session_mb"] * 2**20, time_budget=args["time_budget"],
                        max_new_tokens=args["max_new_tokens"])
    app = build_app(Demo(pipe, ref, max_pixels=args["max_pixels"], limits=limits, scratch=Scratch(max_bytes=args["max_temp_mb"] * 2**20)))
    print(f"[mingexp] demo of {args['model']} on http://{args['host']}:{args['port']}  (Ctrl-C stops it)")
    launch(app, args["host"], args["port"], args["share"], max_sessions=args["max_sessions"])


if __name__ == "__main__":
    main()

"""``python -m mingexp.demo model=<export folder or run checkpoint> [host=127.0.0.1] [port=7860] [share=false]``

Loads the model once (an export written by ``python -m mingexp.export``, or a run's ``.ckpt``, rebuilt from the
run's config beside it as ``export`` does) and serves the page of :mod:`mingexp.demo.app` until interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mingexp.cli_args import REQUIRED, Opt, boolean, parse
from mingexp.demo.limits import MAX_UPLOAD_PIXELS as MAX_PIXELS
from mingexp.demo.limits import DemoLimits
from mingexp.extras import MissingExtra, require

LIMITS = DemoLimits()
SPEC = {
    "model": Opt(str, REQUIRED, "an export folder (python -m mingexp.export) or a run's checkpoints/last.ckpt", positional=True),
    "host": Opt(str, "127.0.0.1", "the address to serve on (127.0.0.1: this machine only)"),
    "port": Opt(int, 7860, "the port"),
    "share": Opt(boolean, False, "a public Gradio share link (off: nothing leaves this machine)"),
    "device": Opt(str, "cpu", "cpu | cuda"),
    "dtype": Opt(str, None, "cast every part, e.g. bf16 on a GPU (default: as saved)"),
    "mllm_path": Opt(str, None, "the frozen MLLM's folder, when not where the export references it"),
    "max_pixels": Opt(int, MAX_PIXELS, "uploads above this many pixels are refused before decoding"),
    # what one visitor may take (mingexp.demo.actions.DemoLimits); the scratch disk and the sessions held
    "max_turns": Opt(int, LIMITS.max_turns, "turns a session keeps"),
    "max_session_pixels": Opt(int, LIMITS.max_session_pixels, "pixels of all a session's images"),
    "max_text": Opt(int, LIMITS.max_text, "characters of a prompt, instruction or question"),
    "max_session_mb": Opt(int, LIMITS.max_session_bytes // 2**20, "MiB a reloaded session zip may unpack to (real bytes)"),
    "time_budget": Opt(float, LIMITS.time_budget, "seconds a request may run"),
    "max_new_tokens": Opt(int, LIMITS.max_new_tokens, "tokens an answer may have"),
    "max_prompt_tokens": Opt(int, None, "cap on a prompt's tokens (default: what the MLLM's positions leave)"),
    "max_temp_mb": Opt(int, 2048, "MiB the demo's temporary files may take"),
    "max_sessions": Opt(int, 32, "sessions held at once (the oldest is dropped past it)"),
    # loader flags: yours to give, never taken from the folder (mingexp.untrusted)
    "trust_remote_code": Opt(boolean, False, "let transformers run the MLLM folder's own code (off unless you trust it)"),
    "attn_implementation": Opt(str, "sdpa", "sdpa | eager | flash_attention_2 (with .[gpu])"),
}


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "demo", __doc__.strip().splitlines()[0])
    try:  # gradio is an extra (app.py imports it at its top): a missing one is said before the model loads
        require("gradio", "demo", "the web demo (python -m mingexp.demo)")
    except MissingExtra as e:
        raise SystemExit(f"demo: {e}") from None
    from mingexp.demo.actions import Demo  # the heavy imports after the arguments: --help answers at once
    from mingexp.demo.app import build_app, launch
    from mingexp.demo.scratch import Scratch
    from mingexp.errors import ConfigError
    from mingexp.pipeline import InputError
    from mingexp.pipeline.loading import load_pipeline

    try:
        pipe = load_pipeline(args["model"], args["device"], args["dtype"], args["mllm_path"], args["trust_remote_code"],
                             args["attn_implementation"])
    except (InputError, ConfigError) as e:
        raise SystemExit(f"demo: {e}") from None
    # the reproducing command lines name the model as generate reads it (an export folder or a .ckpt), by absolute path
    ref = str(Path(args["model"]).expanduser().resolve())
    pipe.max_prompt_tokens = args["max_prompt_tokens"]
    limits = DemoLimits(max_turns=args["max_turns"], max_session_pixels=args["max_session_pixels"], max_text=args["max_text"],
                        max_session_bytes=args["max_session_mb"] * 2**20, time_budget=args["time_budget"],
                        max_new_tokens=args["max_new_tokens"])
    load_args = {k: args[k] for k in ("device", "dtype", "mllm_path", "trust_remote_code", "attn_implementation", "max_prompt_tokens")}
    app = build_app(Demo(pipe, ref, max_pixels=args["max_pixels"], limits=limits, scratch=Scratch(max_bytes=args["max_temp_mb"] * 2**20),
                         load_args=load_args))
    print(f"[mingexp] demo of {args['model']} on http://{args['host']}:{args['port']}  (Ctrl-C stops it)")
    launch(app, args["host"], args["port"], args["share"], max_sessions=args["max_sessions"])


if __name__ == "__main__":
    main()

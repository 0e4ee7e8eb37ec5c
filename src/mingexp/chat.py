"""An interactive terminal session with an export folder or a run's checkpoint: generate, edit, ask, undo, save.

    python -m mingexp.chat model=exports/toy [out=outputs/chat] [steps=20] [seed=0]

The commands are in :data:`HELP` (``help`` prints them). Every image is written to ``out`` as soon as it
exists and its path is printed; ``undo`` removes the undone turn's image file again. In a terminal the
prompt has line editing and history (``readline``: arrow keys move in the line or recall earlier ones);
from a pipe, lines are read as they come, without a prompt.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Iterator, TextIO

from mingexp.cli_args import REQUIRED, Opt, boolean, parse

SPEC = {
    "model": Opt(str, REQUIRED, "an export folder (python -m mingexp.export) or a run's checkpoints/last.ckpt", positional=True),
    "out": Opt(str, None, "the session's folder (default: outputs/chat/<time>)"),
    "steps": Opt(int, None, "sampler steps (default: the model's)"),
    "guidance_scale": Opt(float, None, "classifier-free guidance (default: the model's)"),
    "seed": Opt(int, 0, "every turn's seed"),
    "device": Opt(str, "cpu", "cpu | cuda"),
    "dtype": Opt(str, None, "cast every part, e.g. bf16 on a GPU (default: as saved)"),
    "mllm_path": Opt(str, None, "the frozen MLLM's folder, when not where the export references it"),
    "max_prompt_tokens": Opt(int, None, "cap on a prompt's tokens (default: what the MLLM's positions leave)"),
    # loader flags: yours to give, never taken from the folder (mingexp.untrusted)
    "trust_remote_code": Opt(boolean, False, "let transformers run the MLLM folder's own code (off unless you trust it)"),
    "attn_implementation": Opt(str, "sdpa", "sdpa | eager | flash_attention_2 (with .[gpu])"),
}
PROMPT = "mingexp> "
HELP = """Commands, one per line (anything else is a question about the latest image):
  generate <prompt>       a new image                  edit <instruction>   edit the latest image
  load <path>             start from an image file     ask <question>       a question about the latest image
  undo                    drop the last turn           save [folder]        every image + transcript.json
  history                 list the turns               help                 this text
  quit                    save the session and leave (also Ctrl-D)"""


def terminal_lines(prompt: str = PROMPT, read: Callable[[str], str] = input) -> Iterator[str]:
    """Lines typed at a prompt, with readline's line editing and history when the platform has it."""
    try:
        import readline  # noqa: F401  (importing it gives input() line editing and history)
    except ImportError:
        pass
    while True:
        try:
            yield read(prompt)
        except EOFError:
            print(file=sys.stdout)
            return


def run(session, out: Path, lines: Iterator[str] | TextIO, stdout: TextIO) -> None:
    """The read–eval–print loop over ``lines`` (separate from :func:`main` so tests drive it with any streams)."""
    from mingexp.pipeline import InputError

    def say(text: str) -> None:
        print(text, file=stdout, flush=True)

    def image_file(index: int) -> Path:
        return out / f"image_{index:03d}.png"

    def write_latest() -> None:
        path = image_file(len(session.images) - 1)
        session.latest.save(path)
        say(f"image: {path}")

    say("mingexp chat — type `help` for commands.")
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if any(ord(c) < 32 for c in line):  # an escape sequence (arrow keys without line editing), not a question
            say("error: the line holds control characters (arrow keys?); type the command again, or `help`.")
            continue
        command, _, rest = line.partition(" ")
        command = command.lower()
        try:
            if command in ("quit", "exit"):
                break
            elif command == "help":
                say(HELP)
            elif command == "generate":
                session.generate(rest)
                write_latest()
            elif command == "edit":
                session.edit(rest)
                write_latest()
            elif command == "load":
                session.load(rest)
                write_latest()
            elif command == "ask":
                say(f"answer: {session.ask(rest)}")
            elif command == "undo":
                turn = session.undo()
                if turn.image is not None:
                    image_file(turn.image).unlink(missing_ok=True)
                say(f"undone: {turn.kind} {turn.text!r}")
            elif command == "save":
                say(f"saved: {session.save(Path(rest) if rest else out)}")
            elif command == "history":
                for k, t in enumerate(session.turns):
                    say(f"{k}: {t.kind} {t.text!r}" + (f" → image {t.image}" if t.image is not None else f" → {t.answer!r}" if t.answer else ""))
            else:
                say(f"answer: {session.ask(line)}")
        except InputError as e:
            say(f"error: {e}")
    session.save(out)
    say(f"session saved: {out}")


def main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> Path:
    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "chat", __doc__.strip().splitlines()[0])
    from mingexp.errors import ConfigError  # the heavy imports after the arguments: --help answers at once
    from mingexp.pipeline import InputError
    from mingexp.pipeline.loading import load_pipeline

    try:
        pipe = load_pipeline(args["model"], device=args["device"], dtype=args["dtype"], mllm_path=args["mllm_path"],
                             trust_remote_code=args["trust_remote_code"], attn_implementation=args["attn_implementation"])
        pipe.max_prompt_tokens = args["max_prompt_tokens"]
    except (InputError, ConfigError) as e:
        raise SystemExit(f"chat: {e}") from None
    out = Path(args["out"] or f"outputs/chat/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    out.mkdir(parents=True, exist_ok=True)
    defaults = {k: args[k] for k in ("steps", "guidance_scale", "seed") if args[k] is not None}
    stdin = stdin or sys.stdin
    lines = terminal_lines() if stdin is sys.stdin and stdin.isatty() else stdin
    run(pipe.session(**defaults), out, lines, stdout or sys.stdout)
    return out


if __name__ == "__main__":
    main()

"""An interactive terminal session with an exported pipeline: generate, edit, ask, undo, save.

    python -m mingexp.chat model=exports/toy [out=outputs/chat] [steps=20] [seed=0]

Commands (one per line; anything else is a question about the latest image)::

    generate <prompt>        a new image                  edit <instruction>   edit the latest image
    load <path>              start from an image file     ask <question>       a question about the latest image
    undo                     drop the last turn           save [folder]        every image + transcript.json
    history                  list the turns               help / quit
Every image is written to ``out`` as soon as it exists, and its path is printed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from mingexp.cli_args import parse

SPEC = {
    "model": (str, ...),
    "out": (str, None),
    "steps": (int, None),
    "guidance_scale": (float, None),
    "seed": (int, 0),
    "device": (str, "cpu"),
    "dtype": (str, None),
    "mllm_path": (str, None),
}
HELP = __doc__.split("Commands", 1)[1].split("Every image")[0]


def run(session, out: Path, stdin: TextIO, stdout: TextIO) -> None:
    """The read–eval–print loop (separate from :func:`main` so tests drive it with any streams)."""
    from mingexp.pipeline import InputError

    def say(text: str) -> None:
        print(text, file=stdout, flush=True)

    def write_latest() -> None:
        path = out / f"image_{len(session.images) - 1:03d}.png"
        session.latest.save(path)
        say(f"image: {path}")

    say("mingexp chat — type `help` for commands.")
    for line in stdin:
        line = line.strip()
        if not line:
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
    from mingexp.pipeline import InputError, MingUniPipeline

    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "chat")
    try:
        pipe = MingUniPipeline.from_pretrained(args["model"], device=args["device"], dtype=args["dtype"], mllm_path=args["mllm_path"])
    except InputError as e:
        raise SystemExit(f"chat: {e}") from None
    out = Path(args["out"] or f"outputs/chat/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    out.mkdir(parents=True, exist_ok=True)
    defaults = {k: args[k] for k in ("steps", "guidance_scale", "seed") if args[k] is not None}
    run(pipe.session(**defaults), out, stdin or sys.stdin, stdout or sys.stdout)
    return out


if __name__ == "__main__":
    main()

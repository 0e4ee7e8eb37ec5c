"""``key=value`` command lines for mingexp's tools that are not Hydra apps.

One style for every entry point: ``python -m mingexp.<tool> key=value ...``, as the Hydra apps (``train``,
``evaluate``, ``export``, ``doctor``) take their overrides. The inference tools (``generate``, ``chat``, ``demo``)
take a pipeline folder as ``model=DIR``, which Hydra would read as a choice in its ``model`` config group, and the
data / report tools take a few plain values: these parse their options here. Every option is declared with its
type, default and a one-line description (:class:`Opt`); ``--help`` lists them, an unknown key or a bad value is an
error that lists the valid keys. Positional options (a folder, a list of files) may be given bare or as
``key=value``; a repeatable option (``many``) takes the key several times or a comma-separated list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

REQUIRED = ...


@dataclass(frozen=True)
class Opt:
    """One option: ``type`` converts the text, ``default`` is used when absent (``REQUIRED`` = must be given),
    ``help`` is its one-line description, ``positional`` lets it be given bare (in declaration order), ``many``
    collects every value given into a list."""

    type: Callable[[str], Any] = str
    default: Any = None
    help: str = ""
    positional: bool = False
    many: bool = False


def boolean(value: str) -> bool:
    """``true`` / ``false`` (also 1 / 0, yes / no)."""
    lowered = value.lower()
    if lowered not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError(value)
    return lowered in ("1", "true", "yes")


def _as_opt(value) -> Opt:
    if isinstance(value, Opt):
        return value
    cast, default = value  # the (type, default) pairs of older specs
    return Opt(cast, default)


def usage(spec: Mapping[str, Opt | tuple], tool: str, description: str = "") -> str:
    """The ``--help`` text: the command, then every option with its description and default."""
    opts = {k: _as_opt(v) for k, v in spec.items()}
    head = f"usage: python -m mingexp.{tool} " + " ".join(
        f"{k}=<{o.type.__name__}>{'…' if o.many else ''}" if o.default is REQUIRED else f"[{k}=…]" for k, o in opts.items())
    lines = [head]
    if description:
        lines += ["", description]
    lines += ["", "options (key=value; a positional option may be given bare):"]
    width = max(len(k) for k in opts) + 2
    for k, o in opts.items():
        default = "required" if o.default is REQUIRED else f"default: {o.default}"
        flags = ", ".join(f for f, on in (("positional", o.positional), ("repeatable", o.many)) if on)
        lines.append(f"  {k:<{width}}{o.help}{' ' if o.help else ''}({default}{'; ' + flags if flags else ''})")
    return "\n".join(lines)


def parse(argv: Sequence[str], spec: Mapping[str, Opt | tuple], tool: str, description: str = "") -> dict[str, Any]:
    """The options of ``argv`` by ``spec`` (key → :class:`Opt`, or an older (type, default) pair)."""
    opts = {k: _as_opt(v) for k, v in spec.items()}
    values: dict[str, Any] = {k: ([] if o.many else o.default) for k, o in opts.items()}
    given: set[str] = set()
    positional = [k for k, o in opts.items() if o.positional]
    help_text = usage(opts, tool, description)

    def put(key: str, text: str) -> None:
        o = opts[key]
        try:
            if o.many:
                values[key] += [o.type(t) for t in (text.split(",") if "," in text and o.type is not str else [text])]
            else:
                values[key] = None if text.lower() in ("null", "none") and o.default is None else o.type(text)
        except ValueError:
            raise SystemExit(f"{tool}: {key}={text!r} is not a {o.type.__name__}.") from None
        given.add(key)

    for arg in argv:
        if arg in ("-h", "--help"):
            print(help_text)
            raise SystemExit(0)
        key, sep, value = arg.partition("=")
        if sep and key in opts:
            put(key, value)
            continue
        if not sep or key not in opts:
            target = next((k for k in positional if opts[k].many or k not in given), None)
            if target is not None and not arg.startswith("-"):
                put(target, arg)
                continue
            raise SystemExit(f"{tool}: unknown argument {arg!r}; valid keys: {', '.join(opts)} (--help describes them).")
    missing = [k for k, o in opts.items() if o.default is REQUIRED and (not values[k] if o.many else values[k] is REQUIRED)]
    if missing:
        raise SystemExit(f"{tool}: missing {', '.join(missing)}\n{help_text}")
    for k, o in opts.items():
        if o.many and not values[k] and o.default not in (None, REQUIRED):
            values[k] = list(o.default)
    return values


def parse_command(argv: Sequence[str], commands: Mapping[str, tuple[str, Mapping[str, Opt | tuple]]], tool: str,
                  description: str = "") -> tuple[str, dict[str, Any]]:
    """``python -m mingexp.<tool> <command> key=value ...``: the command (its first word) and its options.
    ``commands``: name → (one-line description, spec)."""
    listing = "\n".join(f"  {name:<10}{text}" for name, (text, _) in commands.items())
    head = f"usage: python -m mingexp.{tool} <command> key=value ...\n\n{description}\n\ncommands (each has --help):\n{listing}"
    if not argv or argv[0] in ("-h", "--help"):
        print(head)
        raise SystemExit(0 if argv else 2)
    name, rest = argv[0], list(argv[1:])
    if name not in commands:
        raise SystemExit(f"{tool}: unknown command {name!r}; one of {', '.join(commands)}\n{head}")
    text, spec = commands[name]
    return name, parse(rest, spec, f"{tool} {name}", text)

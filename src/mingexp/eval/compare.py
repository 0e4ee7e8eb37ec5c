"""``python -m mingexp.eval.compare <result A> <result B>``: two judged results side by side, only under one judge.

A result is what ``python -m mingexp.evaluate`` wrote for a judged benchmark (``results.json``, or the evaluation's
``summary.json``). Their numbers are compared (A, B, B − A) only when the same judge made both (weights, prompt set,
dtype, decoding: :func:`mingexp.eval.judge.same_judge`); otherwise the comparison is refused, naming what differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mingexp.cli_args import REQUIRED, Opt, parse

SPEC = {
    "a": Opt(str, REQUIRED, "the first result (results.json or summary.json)", positional=True),
    "b": Opt(str, REQUIRED, "the second result", positional=True),
}


def read_result(path: str | Path) -> tuple[str, dict[str, float], Any]:
    """``(evaluation, values, judge identity)`` of a results.json or summary.json."""
    from mingexp.errors import ConfigError
    from mingexp.eval.judge import JudgeIdentity

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable result ({e}).") from None
    details = data.get("summary") if isinstance(data.get("summary"), dict) and "judge" in data["summary"] else data
    if "judge" not in details:
        raise ConfigError(f"{path}: no judge identity; only results of a judged benchmark (+eval=gedit | imgedit) are compared.")
    values = details.get("values") or {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return str(details.get("evaluation") or data.get("evaluation")), values, JudgeIdentity.from_json(details["judge"], str(path))


def compare(a: str | Path, b: str | Path) -> dict[str, dict[str, float | None]]:
    from mingexp.errors import ConfigError
    from mingexp.eval.judge import same_judge

    name_a, values_a, judge_a = read_result(a)
    name_b, values_b, judge_b = read_result(b)
    if name_a != name_b:
        raise ConfigError(f"{a} is {name_a} and {b} is {name_b}: compare results of one benchmark.")
    same_judge(judge_a, judge_b, f"{a} and {b}")
    return {k: {"a": values_a.get(k), "b": values_b.get(k),
                "b-a": values_b[k] - values_a[k] if k in values_a and k in values_b else None}
            for k in sorted(set(values_a) | set(values_b))}


def main(argv: list[str] | None = None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv, SPEC, "eval.compare", __doc__.strip().splitlines()[0])
    from mingexp.errors import ConfigError

    try:
        table = compare(args["a"], args["b"])
    except ConfigError as e:
        raise SystemExit(f"compare: {e}") from None
    for key, row in table.items():
        cells = ["–" if row[c] is None else f"{row[c]:.4f}" for c in ("a", "b", "b-a")]
        print(f"{key:<36} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9}")
    return table


if __name__ == "__main__":
    main()

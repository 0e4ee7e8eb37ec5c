"""Where a training step of the toy main job goes: data wait, MLLM, connector, DiT forward, backward, optimizer.

Builds the real toy configuration from ``conf/`` (``model=toy data=shapes module=unified``, the stage-0 toy
MLLM at ``.cache/toy/mllm``; ``make train`` writes it) and runs the LightningModule's own ``training_step``
by hand (no Trainer, so the timers see only the step) on the real data loader with the main job's data
workers, so "data" is the time the step waited for its batch while the worker shared the cores. The forward
of each part is timed with forward hooks; "backward" is everything between the loss and the optimizer step.

Two configurations run in the same process, taking turns step by step (a slow moment of the shared machine falls on
both), each on its own loader of the same stream:

* ``before``: the toy preset as it is, plus ``--before`` overrides (``--before model.cond_cache=null``: the MLLM
  for every row, what the prompt-state cache saves);
* ``after``: the toy preset plus ``--after`` overrides (the candidate).

The cache's gain grows as a run sees its captions again, so ``--skip N`` first passes the stream's first N
batches through the condition path untimed (filling the cache as N steps of the main job would) and times
the batches after them. Prints the breakdown in ms per step, the cache's hit rate and the ratio before / after.

    python benchmarks/step_time.py                              # 40 timed steps after 1000 skipped
    python benchmarks/step_time.py --steps 60 --skip 0          # a run's first steps
    python benchmarks/step_time.py --after model.dit.config.patch_size=8   # any override of either side
    python benchmarks/step_time.py --before model.cond_cache=null          # what the prompt-state cache saves
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
PARTS = ("data", "mllm", "connector", "dit_forward", "backward", "optimizer")


@contextmanager
def forward_timers(modules: dict[str, torch.nn.Module], store: dict[str, float]):
    """Adds each module's forward wall time (ms) into ``store[name]`` while the block runs."""
    handles, started = [], {}
    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(lambda m, a, name=name: started.__setitem__(name, time.perf_counter())))
        handles.append(module.register_forward_hook(
            lambda m, a, o, name=name: store.__setitem__(name, store.get(name, 0.0) + (time.perf_counter() - started[name]) * 1000)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def build(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/mingexp_step_time", *overrides])
    torch.manual_seed(int(cfg.seed))
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.module)
    datamodule.configure(module.model_spec())
    datamodule.prepare_data()
    datamodule.setup("fit")
    module.log = lambda *a, **k: None  # no trainer to log to
    return module, datamodule


def stream(datamodule):
    """Batches epoch after epoch, the datamodule keeping its position as under the Trainer."""
    loader = datamodule.train_dataloader()
    while True:
        for batch in loader:
            yield datamodule.on_before_batch_transfer(batch, 0)


class Side:
    """One configuration's module and loader: the cache filled by ``skip`` untimed batches, then timed steps on demand
    (:meth:`step`), so two sides can take turns step by step."""

    def __init__(self, module, datamodule, skip: int, warmup: int, steps: int, threads: int, replay: bool = False) -> None:
        """``threads``: torch threads while this side steps. ``replay``: the timed steps take the last skipped batches
        again, every row of which the cache holds (the step once a world's states are all kept)."""
        self.module, self.model, self.datamodule, self.warmup, self.threads = module, module.model, datamodule, warmup, threads
        self.optimizer = module.configure_optimizers()["optimizer"]
        self.model.train()
        model, loader, seen = self.model, stream(datamodule), []
        with torch.no_grad():
            for batch in itertools.islice(loader, skip):  # the cache fills as in the first `skip` steps of a run
                if model.cond_cache is not None:
                    image_pad = model.mllm.processor.image_pad_id
                    rows = [r for r, ids in enumerate(batch.mllm.input_ids) if model.cond_cache.images or image_pad not in ids]
                    if rows:
                        model.encode(batch.mllm.select(rows, image_pad))
                if replay:
                    seen.append(batch)
        self.loader = itertools.cycle(seen[-(warmup + steps):]) if replay else loader
        if model.cond_cache is not None:
            cache = model.cond_cache  # the hit rates of the timed steps only
            cache.hits = cache.misses = cache.image_hits = cache.image_misses = 0
        self.times: dict[str, list[float]] = {p: [] for p in (*PARTS, "other_forward", "step")}
        self.t2i_rows = 0
        self.parts = {"mllm": model.mllm, "connector": model.connector, "dit_forward": model.dit}

    def step(self, i: int) -> None:
        torch.set_num_threads(self.threads)
        t_data = time.perf_counter()
        batch = next(self.loader)
        forward: dict[str, float] = {}
        with forward_timers(self.parts, forward):
            t0 = time.perf_counter()
            loss = self.module.training_step(batch, i)
            t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if i < self.warmup:
            return
        times = self.times
        self.t2i_rows += sum(task == "t2i" for task in batch.tasks)
        times["data"].append((t0 - t_data) * 1000)
        for name in self.parts:
            times[name].append(forward.get(name, 0.0))
        times["other_forward"].append((t1 - t0) * 1000 - sum(forward.get(n, 0.0) for n in self.parts))
        times["backward"].append((t2 - t1) * 1000)
        times["optimizer"].append((t3 - t2) * 1000)
        times["step"].append((t3 - t_data) * 1000)

    def result(self) -> dict[str, float]:
        out = {k: statistics.median(v) for k, v in self.times.items()}
        out["t2i_per_s"] = self.t2i_rows / (sum(self.times["step"]) / 1000)  # t2i rows over the timed steps' total time
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--skip", type=int, default=1000, help="untimed batches first (the point of a run the steps come from)")
    parser.add_argument("--replay", action="store_true", help="time the last skipped batches again (every row cached; the data worker idles)")
    parser.add_argument("--threads-after", type=int, default=None, help="torch threads of the main process on the 'after' side")
    parser.add_argument("--before", nargs="*", default=[], help="Hydra overrides of the 'before' side")
    parser.add_argument("--after", nargs="*", default=[], help="Hydra overrides of the 'after' side")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of both sides")
    args = parser.parse_args()

    threads = torch.get_num_threads()
    sides = {}
    for name, extra in (("before", args.before), ("after", args.after)):
        module, datamodule = build([*args.overrides, *extra])
        side_threads = args.threads_after if name == "after" and args.threads_after else threads
        sides[name] = Side(module, datamodule, args.skip, args.warmup, args.steps, side_threads, args.replay)
    # the two sides take turns step by step, so a slow moment of the shared machine falls on both
    for i in range(args.warmup + args.steps):
        for side in sides.values():
            side.step(i)
    results = {}
    for name, side in sides.items():
        results[name] = side.result()
        cache = side.model.cond_cache
        print(f"{name}: {args.steps} steps of {side.datamodule.batch_size} after {args.skip} skipped, {side.datamodule.num_workers} data worker(s)"
              + (f"; prompt-state cache {cache.stats()}" if cache is not None else "; no prompt-state cache")
              + f"; {side.threads} torch thread(s)", flush=True)
    print(f"{'part (median ms)':<18}" + "".join(f"{n:>12}" for n in results) + f"{'ratio':>10}")
    for part in (*PARTS, "other_forward", "step"):
        a, b = results["before"][part], results["after"][part]
        print(f"{part:<18}{a:>12.1f}{b:>12.1f}{(a / b if b > 0.05 else float('nan')):>10.2f}")
    print(f"ratio before/after per step: {results['before']['step'] / results['after']['step']:.2f}x")
    print(f"t2i samples per second: before {results['before']['t2i_per_s']:.1f}, after {results['after']['t2i_per_s']:.1f}, "
          f"ratio after/before {results['after']['t2i_per_s'] / results['before']['t2i_per_s']:.2f}x")


if __name__ == "__main__":
    main()

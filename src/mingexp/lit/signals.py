"""SIGTERM (what SLURM and most schedulers send before killing a job) stops a run within seconds, anywhere.

During training steps Lightning handles it: its handler records the signal and the loop raises
``SIGTERMException`` at the next step boundary, after which :class:`~mingexp.lit.checkpoint.InterruptCheckpoint`
writes ``interrupted.ckpt``. Sampling and evaluation inside callbacks run for minutes without a step
boundary; :func:`stop_on_sigterm` makes a SIGTERM there raise at once. That is safe because they change no
training state: the checkpoint written on the way out is the one of the last training step.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException


@contextmanager
def stop_on_sigterm(trainer: L.Trainer) -> Iterator[None]:
    """Inside the block a SIGTERM raises ``SIGTERMException`` immediately (after Lightning's own handler ran)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame) -> None:
        if callable(previous):
            previous(signum, frame)  # Lightning's: records received_sigterm, stops launched worker processes
        raise SIGTERMException

    signal.signal(signal.SIGTERM, handler)
    try:
        if trainer.received_sigterm:  # arrived during the step that just ended
            raise SIGTERMException
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

"""Preemption: on SIGTERM or SIGINT, training finishes its iteration, saves, and exits 128 + the signal."""
import atexit
import contextlib
import functools
import multiprocessing
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Records the first stop signal; the training loop calls `poll()` between iterations.

    Clusters may repeat SIGTERM (from the batch shell and the job step): repeats are ignored, and only
    SIGKILL stops a checkpoint write. A second Ctrl-C (SIGINT) interrupts at once, as a user expects.
    """

    def __init__(self, agree=None):
        self.signum = None
        self._agree = agree

    def poll(self):
        """Whether to stop now. Under torchrun `agree` (an all-reduce max) gives every process the same answer
        at the same call, so all stop after the same iteration even when only some received the signal; the
        decision must come from here, since a signal may arrive in one process just after the all-reduce."""
        return self.answer(self.ask())

    def ask(self):
        """poll in two halves, so that a training step reads the agreed answer with its other numbers (one wait
        for the GPU): this process's signal (0: none), agreed among the processes; a number, or a 0-d tensor
        on the device under torchrun. Then `answer(what it read)`."""
        return self._agree(self.signum or 0) if self._agree else (self.signum or 0)

    def answer(self, agreed):
        agreed = int(agreed)
        if agreed:
            self.signum = agreed
        return bool(agreed)

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    @property
    def name(self):
        return signal.Signals(self.signum).name

    @property
    def exit_status(self):
        """128 + signal, the status of a process the signal ended: not done, so schedulers requeue it."""
        return 128 + self.signum

    @contextlib.contextmanager
    def installed(self):
        previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def ignore_stop_signals(worker_id):
    """DataLoader workers leave stop signals to the main process, which ends them after saving."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


@functools.cache
def end_workers_at_exit():
    """In the main process, once: at exit, kill the loader workers still alive (after an error the failed
    run's iterators may still hold them). multiprocessing's own exit handler would SIGTERM them, which they
    ignore, then wait for them for ever. Registered after it, this handler runs before it."""
    atexit.register(_kill_daemonic_children)


def _kill_daemonic_children():
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join()

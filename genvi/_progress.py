"""Progress reporting for `fit`: a tqdm bar in a terminal or Jupyter, log lines otherwise."""

from __future__ import annotations

import sys
import time


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class Progress:
    """Updated between compiled chunks of steps; `mode` is "bar", "log" or "off"."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.total, self.start = total, time.perf_counter()
        self.bar = None
        self.next_log = initial
        if not enabled:
            self.mode = "off"
        elif _in_notebook() or sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.mode = "bar"
            self.bar = tqdm(total=total, initial=initial, desc="genvi.fit", unit="step", dynamic_ncols=True)
        else:
            self.mode = "log"
        self.every = max(1, total // 10)

    def update(self, step: int, loss: float) -> None:
        if self.mode == "bar":
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        elif self.mode == "log" and (step >= self.next_log or step == self.total):
            elapsed = time.perf_counter() - self.start
            print(f"genvi.fit: step {step}/{self.total}  loss {loss:.6g}  ({elapsed:.1f} s)", file=sys.stderr, flush=True)
            self.next_log = step + self.every

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

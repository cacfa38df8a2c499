"""Progress of a grid: a bar on a terminal, one line per finished cell everywhere else (CI logs,
`nohup`, Slurm output), so a long run is never silent between its first line and its last."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

LABEL_CHARS = 90  # a cell's settings are cut to this in a progress line (the run has them all)
POSTFIX_CHARS = 40  # the bar's postfix on a terminal, so the bar itself keeps its width
NO_WORK = ("cached", "skipped", "busy")  # results that took no training time: not a basis for an estimate
MIN_TRAINED = 2  # cells trained before a time left is estimated


def short_label(cell, limit: int = LABEL_CHARS) -> str:
    """`method/model/dataset/sN[settings]` with the settings cut to fit `limit` characters."""
    label = cell.label
    return label if len(label) <= limit else label[:limit - 2] + "…]"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


class GridProgress:
    """Counts finished cells; the time left is estimated from the cells' relative costs (the same
    estimate that orders the pool), so one long cell early on does not skew it. Cells that took no
    training time (cached, skipped) leave the estimate, and none is shown before `MIN_TRAINED`
    cells have trained: the first cells of a grid carry its start-up, which the costs do not model.
    On a terminal each finished cell is a line above the bar, whose postfix stays short."""

    def __init__(self, labels: Sequence[str], costs: Sequence[float], *, jobs: int = 1, stream=None,
                 tty: bool | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.cost = dict(zip(labels, costs))
        self.total_cost = sum(costs) or 1.0
        self.done_cost, self.done, self.total, self.trained = 0.0, 0, len(labels), 0
        self.start = time.perf_counter()
        self.bar = None
        if self.tty:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.total, desc=f"grid ({jobs} jobs)", file=self.stream)

    def update(self, result) -> None:
        self.done += 1
        cost = self.cost.get(result.cell.label, 0.0)
        if result.status in NO_WORK:
            self.total_cost = max(self.total_cost - cost, 1e-12)
        else:
            self.done_cost += cost
            self.trained += 1
        if self.bar is not None:
            from tqdm.auto import tqdm
            tqdm.write(self.line(result), file=self.stream)
            self.bar.set_postfix_str(f"{result.status}: {short_label(result.cell, POSTFIX_CHARS)}")
            self.bar.update()
            return
        self.stream.write(self.line(result) + "\n")
        self.stream.flush()

    def line(self, result) -> str:
        elapsed = time.perf_counter() - self.start
        parts = [f"[{self.done}/{self.total}]", short_label(result.cell), result.status]
        metrics = result.metrics or {}
        if "test_acc" in metrics and result.status == "finished":
            parts.append(f"test_acc {100 * metrics['test_acc']:.2f}%")
        if "train_time" in metrics:
            parts.append(f"train {metrics['train_time']:.1f}s")
        if result.status in ("diverged", "skipped", "failed") and result.reason:
            parts.append(f"({result.reason.strip().splitlines()[-1][:120]})")
        enough = self.trained >= MIN_TRAINED and self.done_cost > 0
        left = elapsed * (self.total_cost - self.done_cost) / self.done_cost if enough else float("nan")
        parts.append(f"elapsed {_clock(elapsed)}, left ≈ {_clock(left) if left == left else '?'}")
        return "  ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

"""`SelectionResult`: what `genvi.vi.select` returns, with its table and plot."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


@dataclasses.dataclass
class CandidateResult:
    """One candidate's restarts.

    - `elbos`, `elbo_ses`: `[R]` final ELBO of each restart, estimated from `eval_particles`
      independent draws at the trained parameters, and its Monte Carlo standard error; NaN for
      an excluded restart.
    - `evidences`, `evidence_ses`: `[R]` the IWAE bound with `evidence_particles` particles on
      each restart's fitted guide (a tighter lower bound on `log p(x)`) and its delta-method
      standard error; NaN when excluded or not computed.
    - `best`, `best_restart`: the largest finite final ELBO and its restart.
    - `mean`, `se`: the mean final ELBO over the kept restarts and its standard error (spread
      over restarts combined in quadrature with the Monte Carlo error).
    - `evidence`, `evidence_se`: the IWAE evidence of the best restart.
    - `excluded`: restarts dropped (non-finite training or evaluation), with a warning.
    - `params`: the best restart's parameters; `losses`: `[steps, R]` training losses (NaN after
      a restart stopped).
    """

    name: str
    elbos: np.ndarray
    elbo_ses: np.ndarray
    evidences: np.ndarray
    evidence_ses: np.ndarray
    excluded: tuple[int, ...]
    params: Any
    losses: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        return np.isfinite(self.elbos)

    @property
    def best_restart(self) -> int:
        return int(np.nanargmax(self.elbos)) if self.kept.any() else -1

    @property
    def best(self) -> float:
        return float(self.elbos[self.best_restart]) if self.kept.any() else math.nan

    @property
    def mean(self) -> float:
        return float(np.mean(self.elbos[self.kept])) if self.kept.any() else math.nan

    @property
    def se(self) -> float:
        kept = self.elbos[self.kept]
        if kept.size == 0:
            return math.nan
        mc = float(np.sqrt(np.mean(self.elbo_ses[self.kept] ** 2)))
        spread = float(np.std(kept, ddof=1) / np.sqrt(kept.size)) if kept.size > 1 else 0.0
        return math.hypot(spread, mc)

    @property
    def evidence(self) -> float:
        return float(self.evidences[self.best_restart]) if self.kept.any() else math.nan

    @property
    def evidence_se(self) -> float:
        return float(self.evidence_ses[self.best_restart]) if self.kept.any() else math.nan


@dataclasses.dataclass
class SelectionResult:
    """The outcome of `genvi.vi.select`.

    - `candidates`: name -> [`CandidateResult`][], in the order given.
    - `winner`: the candidate with the largest best final ELBO.
    - `ties`: the other candidates whose best final ELBO is within one combined standard error
      of the winner's (`best_w - best_c <= sqrt(se_w^2 + se_c^2)`): the data do not separate them.
    """

    candidates: dict[str, CandidateResult]
    winner: str
    ties: tuple[str, ...]

    def __getitem__(self, name: str) -> CandidateResult:
        return self.candidates[name]

    @property
    def names(self) -> list[str]:
        return list(self.candidates)

    @property
    def best(self) -> np.ndarray:
        return np.array([c.best for c in self.candidates.values()])

    def table(self) -> str:
        """A Markdown table: best and mean ± se of the final ELBO, the IWAE evidence, restarts."""
        lines = ["| candidate | best ELBO | mean ELBO ± se | IWAE evidence ± se | restarts kept | |",
                 "| --- | ---: | ---: | ---: | ---: | --- |"]
        for name, c in self.candidates.items():
            mark = "winner" if name == self.winner else ("tie" if name in self.ties else "")
            kept = int(c.kept.sum())
            evidence = "not estimated" if math.isnan(c.evidence) else f"{c.evidence:.2f} ± {c.evidence_se:.2f}"
            lines.append(f"| {name} | {c.best:.2f} | {c.mean:.2f} ± {c.se:.2f} | {evidence} | "
                         f"{kept}/{len(c.elbos)} | {mark} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        tie = f" (tied within standard error: {', '.join(self.ties)})" if self.ties else ""
        return f"{self.table()}\n\nwinner: {self.winner}{tie}"

    def plot(self, ax: Any = None) -> Any:
        """A matplotlib figure: each restart's final ELBO (dots), mean ± se (bars) and the IWAE
        evidence (crosses) per candidate; the winner's best is circled."""
        import matplotlib.pyplot as plt

        fig, ax = (plt.subplots(figsize=(6, 3.5)) if ax is None else (ax.figure, ax))
        xs = np.arange(len(self.candidates))
        for x, c in zip(xs, self.candidates.values()):
            ax.scatter(np.full(c.kept.sum(), x), c.elbos[c.kept], s=12, color="0.6", zorder=2)
        means = [c.mean for c in self.candidates.values()]
        ses = [c.se for c in self.candidates.values()]
        ax.errorbar(xs, means, yerr=ses, fmt="o-", color="C0", label="final ELBO (mean ± se)", zorder=3)
        evid = [c.evidence for c in self.candidates.values()]
        if np.isfinite(evid).any():
            ax.plot(xs, evid, "x--", color="C1", label="IWAE evidence (best restart)", zorder=3)
        w = self.names.index(self.winner)
        ax.scatter([w], [self.best[w]], s=160, facecolors="none", edgecolors="C3", label="winner", zorder=4)
        ax.set_xticks(xs, self.names)
        ax.set_xlabel("candidate")
        ax.set_ylabel("nats")
        ax.legend(fontsize="small")
        fig.tight_layout()
        return fig

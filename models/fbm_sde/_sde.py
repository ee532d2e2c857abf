"""The fractional SDE prior and the controlled posterior SDE on the augmented state, solved with diffrax.

Prior:  dX = b(t, X) dt + sigma(t, X) dB_hat^H,  dB_hat^H = sum_k omega_k dY_k,
        dY_k = -gamma_k Y_k dt + dW,
so on the augmented state Z = (X, Y_1..Y_K) the prior is a Markov SDE driven by one W:
        dX = [b - sigma sum_k omega_k gamma_k Y_k] dt + sigma (sum_k omega_k) dW.
Posterior: the control u(t, X, Y) shifts the shared noise, dW -> u dt + dW, in X and every Y_k.
By Girsanov, log dQ/dP = int u . dW + 1/2 int |u|^2 dt (W the posterior's Brownian motion),
with expectation KL(Q || P) = E_Q int 1/2 |u|^2 dt. Both integrals ride along in the state.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from genvi import ConfigError, ShapeError

from ._brownian import GridBrownianPath
from ._mafbm import check_hurst, gamma_grid, optimal_omega, stationary_covariance


class FractionalSDE(eqx.Module):
    """The prior dX = b(t, X) dt + sigma(t, X) dB_hat^H with MA-fBM noise (see the module docstring).

    **Arguments:** `drift(t, x)`, `diffusion(t, x)` (diagonal, positive), `hurst` in (0, 1)
    (stored as the logit `hurst_logit`, so H = sigmoid(h) is learnable), `dim` D,
    `num_processes` K >= 2, `gamma_max` (the fastest speed), `fbm_type` "II"
    (Riemann-Liouville, Y(0) = 0) or "I" (Mandelbrot-van Ness, stationary Y(0)),
    `learn_hurst` (False stops its gradient).
    """

    drift: Callable
    diffusion: Callable
    hurst_logit: jax.Array
    dim: int = eqx.field(static=True)
    num_processes: int = eqx.field(static=True)
    gamma_max: float = eqx.field(static=True)
    fbm_type: str = eqx.field(static=True)
    learn_hurst: bool = eqx.field(static=True)

    def __init__(self, drift, diffusion, hurst: float, dim: int = 1, num_processes: int = 5,
                 gamma_max: float = 20.0, fbm_type: str = "II", learn_hurst: bool = True):
        check_hurst(hurst)
        gamma_grid(num_processes, gamma_max)  # validates K and gamma_max
        if fbm_type not in ("I", "II"):
            raise ConfigError(f"fbm_type must be 'I' (Mandelbrot-van Ness) or 'II' (Riemann-Liouville), got {fbm_type!r}")
        if int(dim) != dim or dim < 1:
            raise ConfigError(f"dim must be a positive integer, got {dim}")
        self.drift, self.diffusion = drift, diffusion
        self.hurst_logit = jnp.asarray(np.log(hurst) - np.log1p(-hurst), jnp.float32)
        self.dim, self.num_processes, self.gamma_max = int(dim), int(num_processes), float(gamma_max)
        self.fbm_type, self.learn_hurst = fbm_type, learn_hurst
        _probe_diffusion(diffusion, self.dim)

    @property
    def hurst(self) -> jax.Array:
        h = self.hurst_logit if self.learn_hurst else jax.lax.stop_gradient(self.hurst_logit)
        return jax.nn.sigmoid(h)

    @property
    def gamma(self) -> np.ndarray:
        return gamma_grid(self.num_processes, self.gamma_max)

    def omega(self, horizon: float) -> jax.Array:
        """The optimal MA-fBM weights omega(H) for horizon T (differentiable in H)."""
        return optimal_omega(self.hurst, self.gamma, horizon, self.fbm_type)


def _probe_diffusion(diffusion, dim: int) -> None:
    """Evaluate a concrete diffusion at x = 0, t = 0 and refuse a non-positive or ill-shaped one."""
    try:
        value = np.asarray(diffusion(jnp.zeros(()), jnp.zeros(dim)))
    except jax.errors.ConcretizationTypeError:
        return
    if value.shape != (dim,):
        raise ShapeError(f"diffusion(t, x) must return shape ({dim},) (diagonal), got {value.shape}")
    if not np.all(value > 0):
        raise ConfigError(f"diffusion(t, x) must be positive, got {value.tolist()} at t = 0, x = 0; "
                          "use ConstantDiffusion(scale > 0) or a softplus output")


class PathConfig(eqx.Module):
    """Static description of a path: observation times, solver grid and options.

    **Arguments:** `obs_times` (strictly increasing, >= `t0`), `dt` (the step; the grid is the
    union of a regular grid and the observation times), `solver` "euler" or "milstein" (Itô
    Milstein; needs commutative noise, e.g. D = 1), `brownian` "virtual" (diffrax
    `VirtualBrownianTree`) or "grid" (`GridBrownianPath`: increments drawn on the solver grid,
    exact for these fixed-step solvers and about 25x faster),
    `girsanov` "expected" (log dQ/dP replaced by 1/2 int |u|^2, the KL; lowest-variance ELBO) or
    "full" (adds int u . dW: the exact log weight, for IWAE), `x0` a fixed initial state
    (or None: the initial state is a latent site "x0"), `grading` `(ratio, floor)` to refine the
    grid before each observation (see `solver_grid`; needed for tight ELBOs with precise data).
    """

    obs_times: tuple = eqx.field(static=True)
    grid: tuple = eqx.field(static=True)
    t0: float = eqx.field(static=True)
    solver: str = eqx.field(static=True)
    brownian: str = eqx.field(static=True)
    girsanov: str = eqx.field(static=True)
    x0: tuple | None = eqx.field(static=True)

    def __init__(self, obs_times, dt: float, t0: float = 0.0, solver: str = "euler", brownian: str = "virtual",
                 girsanov: str = "expected", x0=None, grading: tuple[float, float] | None = None):
        times = np.asarray(obs_times, np.float64).reshape(-1)
        if times.size < 1 or np.any(np.diff(times) <= 0):
            bad = np.nonzero(np.diff(times) <= 0)[0]
            raise ShapeError(f"obs_times must be strictly increasing; got {times.tolist()[:8]}... with "
                             f"non-increasing steps at positions {bad.tolist()[:5]}; sort them and drop duplicates")
        if times[0] < t0:
            raise ConfigError(f"obs_times start at {times[0]} before t0 = {t0}")
        for name, value, allowed in (("solver", solver, ("euler", "milstein")), ("brownian", brownian, ("virtual", "grid")),
                                     ("girsanov", girsanov, ("expected", "full"))):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")
        if not dt > 0:
            raise ConfigError(f"dt must be positive, got {dt}")
        grid = solver_grid(times, dt, t0, grading)
        self.obs_times, self.grid, self.t0 = tuple(times.tolist()), tuple(grid.tolist()), float(t0)
        self.solver, self.brownian, self.girsanov = solver, brownian, girsanov
        self.x0 = None if x0 is None else tuple(np.asarray(x0, np.float64).reshape(-1).tolist())

    def with_girsanov(self, girsanov: str) -> "PathConfig":
        """The same path with another Girsanov term (e.g. "full" to evaluate exact log weights)."""
        if girsanov not in ("expected", "full"):
            raise ConfigError(f"girsanov must be one of ('expected', 'full'), got {girsanov!r}")
        new = object.__new__(PathConfig)
        for name in ("obs_times", "grid", "t0", "solver", "brownian", "x0"):
            object.__setattr__(new, name, getattr(self, name))
        object.__setattr__(new, "girsanov", girsanov)
        return new

    @property
    def horizon(self) -> float:
        """T, the time span the MA-fBM weights are optimised for."""
        return self.obs_times[-1] - self.t0

    def state_size(self, sde: FractionalSDE) -> int:
        """Columns of a path value: X (D), Y (K D), then 1/2 int |u|^2 dt and int u . dW."""
        return sde.dim * (sde.num_processes + 1) + 2


def solver_grid(obs_times, dt: float, t0: float = 0.0, grading: tuple[float, float] | None = None) -> np.ndarray:
    """The solver's time grid: a regular grid of step <= `dt` on [t0, last obs], the observation
    times, and with `grading = (ratio, floor)` extra points before each observation time t_i so
    that a step ending tau before t_i is at most `ratio * (tau + floor)`.

    Why: the optimal control's gain grows like 1/(remaining variance of X at t_i + noise^2)
    towards an observation, so an Euler step of the controlled SDE must shrink there; a
    discrete-time Euler chain with a shift-only control cannot represent the posterior's
    per-step variance reduction, and its best ELBO falls short of log Z by about
    sum_n (step_n / (tau_n + floor))^2 / 4. `floor` is the time over which the prior variance of X
    grows by the observation variance (noise^2); `ratio` ~ 0.02 leaves ~0.02 nats per observation.
    """
    times = np.asarray(obs_times, np.float64)
    steps = max(int(np.ceil((times[-1] - t0) / dt - 1e-9)), 1)
    regular = np.linspace(t0, times[-1], steps + 1)
    near = np.min(np.abs(regular[:, None] - times[None, :]), axis=1) < 1e-4 * dt
    points = [regular[~near], times]  # observation times replace regular points they sit on
    if grading is not None:
        ratio, floor = (float(v) for v in grading)
        if not (0.0 < ratio <= 1.0 and floor > 0.0):
            raise ConfigError(f"grading = (ratio, floor) needs 0 < ratio <= 1 and floor > 0, got {grading}")
        starts = np.concatenate([[t0], times[:-1]])
        for start, end in zip(starts, times):
            tau, back = 0.0, []
            while end - tau > start:
                back.append(end - tau)
                tau += min(dt, ratio * (tau + floor))
            zone = (points[0] > max(end - tau, start)) & (points[0] < end)  # regular points inside the graded zone go
            points[0] = points[0][~zone]
            points.append(np.asarray(back[1:]))
    return np.unique(np.concatenate(points))


def _initial_y(sde: FractionalSDE, key: jax.Array) -> jax.Array:
    K, D = sde.num_processes, sde.dim
    if sde.fbm_type == "II":
        return jnp.zeros((K, D))
    chol = jnp.asarray(np.linalg.cholesky(stationary_covariance(sde.gamma)), jnp.float32)
    return chol @ jax.random.normal(key, (K, D))


def _terms(sde: FractionalSDE, control, index, config: PathConfig, key: jax.Array):
    K, D = sde.num_processes, sde.dim
    gamma = jnp.asarray(sde.gamma, jnp.float32)
    omega = sde.omega(config.horizon)
    w_gamma, w_sum = omega * gamma, jnp.sum(omega)

    def parts(t, z):
        x, y = z[:D], z[D:D + K * D].reshape(K, D)
        u = jnp.zeros(D) if control is None else control(t, x, y, index)
        s = sde.diffusion(t, x)
        s = eqx.error_if(s, jnp.any(s <= 0), "fbm_sde: the diffusion sigma(t, x) became non-positive")
        return x, y, u, s

    def drift(t, z, args):
        x, y, u, s = parts(t, z)
        fx = sde.drift(t, x) + s * (-(w_gamma @ y) + w_sum * u)
        fy = -gamma[:, None] * y + u[None, :]
        return jnp.concatenate([fx, fy.ravel(), jnp.stack([0.5 * jnp.sum(u**2), jnp.zeros(())])])

    def diffusion(t, z, args):
        x, y, u, s = parts(t, z)
        gx = jnp.diag(s * w_sum)
        gy = jnp.tile(jnp.eye(D), (K, 1))
        return jnp.concatenate([gx, gy, jnp.zeros((1, D)), u[None, :]], axis=0)

    t0, t1 = config.grid[0], config.grid[-1]
    if config.brownian == "virtual":
        tol = float(np.min(np.diff(config.grid))) / 4 if len(config.grid) > 1 else 1e-3
        bm = diffrax.VirtualBrownianTree(t0, t1, tol=tol, shape=(D,), key=key)
    else:
        bm = GridBrownianPath(config.grid, (D,), key=key)
    return diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))


def solve(sde: FractionalSDE, control, x0: jax.Array, index, config: PathConfig, key: jax.Array) -> jax.Array:
    """One path of the (controlled) SDE at the observation times: shape (n_obs, D (K+1) + 2).

    Columns: X, then Y (K x D, row-major), then 1/2 int_0^t |u|^2 and int_0^t u . dW.
    `control=None` gives a prior path. The same Brownian increments drive X and every Y_k.
    """
    k_y, k_bm = jax.random.split(key)
    x0 = jnp.asarray(x0, jnp.float32).reshape(sde.dim)
    z0 = jnp.concatenate([x0, _initial_y(sde, k_y).ravel(), jnp.zeros(2)])
    select = getattr(control, "select_path", None)
    if select is not None:  # per-path parameters gathered once, outside the solver's loop
        control, index = select(index), jnp.zeros((), jnp.int32)
    terms = _terms(sde, control, index, config, k_bm)
    solver = diffrax.Euler() if config.solver == "euler" else diffrax.ItoMilstein()
    grid = jnp.asarray(config.grid, jnp.float32)
    if len(config.grid) == 1:
        return z0[None, :]
    sol = diffrax.diffeqsolve(
        terms, solver, config.grid[0], config.grid[-1], None, z0,
        stepsize_controller=diffrax.StepTo(ts=grid),
        saveat=diffrax.SaveAt(ts=jnp.asarray(config.obs_times, jnp.float32)),
        max_steps=len(config.grid),
    )
    return sol.ys

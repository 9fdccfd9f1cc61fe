"""The gradient-boosted member of the model: LightGBM quantile regressors over the MLP's own inputs.

Why a second member: on every validation period we tried, the MLP and a tree model over the same
window make different errors, and the average of their quantiles beats either one (see the README's
ablations). Both members read exactly the same inputs (the ``input_window`` hours before the start
and the calendar of the target hours), so the feature contract, the online path and the no-leak
guarantee do not change.

One row per (example, horizon step); values are divided by the example's scale like the MLP's, so
one global model fits busy and quiet sensors. Boosters are stored as LightGBM text files (no
pickle) beside ``model.pt``.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import platform
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from importlib.metadata import version
from pathlib import Path

import numpy as np

from cityscale import storage
from cityscale.model.inputs import history_scale, nanmean

logger = logging.getLogger(__name__)

BOOSTER_FILE = "booster_q{q:02.0f}.txt"  # e.g. booster_q50.txt for the 0.5 quantile
BOOSTER_GLOB = "booster_q*.txt"
MIN_WINDOW = 168  # the same hour one week before every target hour must be in the window


def booster_file(quantile: float) -> str:
    return BOOSTER_FILE.format(q=round(quantile * 100))


def _calendar_columns(calendar_features: list[str]) -> tuple[list[int], list[int], int, int]:
    """Weekday one-hot columns, the day-flag columns (holiday, lockdown, holiday eve ...), and the hour's sin/cos."""
    index = {name: i for i, name in enumerate(calendar_features)}
    dows = [index[f"dow_{d}"] for d in range(7)]
    flags = [i for name, i in index.items() if not name.startswith(("dow_", "hour_"))]
    return dows, flags, index["hour_sin"], index["hour_cos"]


def _nanmedian(values: np.ndarray) -> np.ndarray:
    """Median over the observed values along axis 0 (NaN where none): ``np.nanmedian``'s answer, from a sort and
    two picks.

    Why not ``np.nanmedian``: over a short axis it goes through masked arrays, which made it the largest single
    cost of a one-sensor forecast (0.29 of ~2.4 ms) and cost 2.8x this in the training rows' build.
    """
    ordered = np.sort(values, axis=0)  # NaN sorts last
    count = np.isfinite(values).sum(axis=0)[None]
    lower = np.take_along_axis(ordered, np.maximum(count - 1, 0) // 2, axis=0)[0]
    upper = np.take_along_axis(ordered, np.minimum(count // 2, len(values) - 1), axis=0)[0]
    return np.where(count[0] > 0, (lower + upper) / 2, np.nan)


def features(history: np.ndarray, calendar: np.ndarray, calendar_features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[N * H, F]`` and the per-example scale ``[N]`` from history ``[N, L]`` and calendar ``[N, H, K]``.

    Why these: the seasonal baselines a planner trusts are all here as inputs, so the trees learn when to
    follow which, and how the level is drifting. Per target hour: the same hour yesterday and in each of the
    window's weeks, that hour-of-week's mean over 2 and 4 weeks and median, the hour-of-day's mean over the
    last 7 and 28 days, the step, hour, weekday and every calendar flag. Per example: the last 6 hours, each
    of the window's 24-hour means and weekly means, the last week's level against the window's (trend), the
    observed share, the hours since the last count and the log level. Missing hours stay NaN (LightGBM routes
    them by itself), so a sensor with a short past still gets its recent-week features.
    """
    n, window = history.shape
    if window < MIN_WINDOW:
        raise ValueError(f"the LightGBM member needs input_window >= {MIN_WINDOW} hours, got {window}")
    horizon = calendar.shape[1]
    scale = history_scale(history)
    x = history / scale[:, None]
    steps = np.arange(horizon)
    hour_of_day, hour_of_week = steps % 24, steps % 168  # a horizon beyond a day repeats the latest ones
    weeks = window // 168
    same_hour_of_week = np.stack([x[:, window - 168 * k + hour_of_week] for k in range(1, weeks + 1)])  # [W, N, H]
    n_days = window // 24
    days = x[:, window - n_days * 24 :].reshape(n, n_days, 24)
    dows, flags, hour_sin, hour_cos = _calendar_columns(calendar_features)
    hour = np.round(np.arctan2(calendar[..., hour_sin], calendar[..., hour_cos]) / (2 * np.pi) * 24) % 24
    per_step = [
        x[:, window - 24 + hour_of_day],
        *same_hour_of_week,
        *(nanmean(same_hour_of_week[:w], 0) for w in (2, 4) if w <= weeks),
        _nanmedian(same_hour_of_week),
        nanmean(days[:, -7:], 1)[:, hour_of_day],
        nanmean(days, 1)[:, hour_of_day],
        np.broadcast_to(steps, (n, horizon)),
        hour,
        calendar[..., dows].argmax(-1),
        *(calendar[..., i] for i in flags),
    ]
    observed = np.isfinite(x)
    last_seen = np.where(observed.any(1), np.argmax(observed[:, ::-1], axis=1), window)
    with np.errstate(invalid="ignore", divide="ignore"):
        trend = np.log((nanmean(x[:, -168:], 1) + 0.01) / (nanmean(x, 1) + 0.01))
    per_example = [
        x[:, -6:],
        nanmean(days, 2),
        nanmean(x[:, window - weeks * 168 :].reshape(n, weeks, 168), 2),
        trend[:, None],
        observed.mean(1)[:, None],
        last_seen[:, None],
        np.log1p(scale)[:, None],
    ]
    step_columns = np.stack([np.asarray(c, dtype=np.float32).reshape(-1) for c in per_step], axis=1)
    example_columns = np.concatenate([np.asarray(c, dtype=np.float32) for c in per_example], axis=1)
    return np.concatenate([step_columns, np.repeat(example_columns, horizon, axis=0)], axis=1), scale


def _rows(
    history: np.ndarray, calendar: np.ndarray, target: np.ndarray, calendar_features: list[str], steps: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows, scaled targets, each row's scale and its draw rank, for ``steps`` random horizon steps per
    example.

    Built in chunks, so the full ``[N * H, F]`` matrix of a 14-year history never exists: every example
    contributes, at a third of the memory and time of all its rows (neighbouring steps of one example are
    nearly the same row, so little is lost; docs/benchmarks.md, "Booster training rows"). All steps when
    ``steps`` >= H. The rank (0 for each example's first drawn step, 1 for its second ...) selects fewer steps
    per example from the same rows: ``rank < k`` is a random ``k`` of each example's steps.
    """
    rng = np.random.default_rng(seed)
    horizon = target.shape[1]
    xs, ys, ws, ranks = [], [], [], []
    for lo in range(0, len(history), 50_000):
        hi = min(lo + 50_000, len(history))
        x, scale = features(history[lo:hi], calendar[lo:hi], calendar_features)
        y = (target[lo:hi] / scale[:, None]).reshape(-1)
        w = np.repeat(scale, horizon)
        pick = np.argsort(rng.random((hi - lo, horizon)), axis=1)[:, : min(steps, horizon)]
        flat = (np.arange(hi - lo)[:, None] * horizon + pick).ravel()
        x, y, w = x[flat], y[flat], w[flat]
        rank = np.tile(np.arange(pick.shape[1], dtype=np.int16), hi - lo)
        keep = np.isfinite(y)
        xs.append(x[keep])
        ys.append(y[keep])
        ws.append(w[keep])
        ranks.append(rank[keep])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws), np.concatenate(ranks)


def train_boosters(
    history: np.ndarray,
    calendar: np.ndarray,
    target: np.ndarray,
    calendar_features: list[str],
    quantiles: list[float],
    out_dir: str | Path,
    *,
    validation: np.ndarray,
    rounds: int,
    early_stopping_rounds: int,
    num_leaves: int,
    learning_rate: float,
    steps_per_example: int,
    band_steps_per_example: int,
    volume_weighted: bool,
    seed: int,
    max_bin: int,
    bagging_fraction: float,
    feature_fraction: float,
    num_threads: int = 0,
) -> dict[float, int]:
    """Fit one quantile booster per quantile, stopping early on the ``validation`` examples; write them.

    The median booster trains on every example outside ``validation`` (``steps_per_example`` horizon steps
    each), the other quantiles' on ``band_steps_per_example`` of those steps: the band is conformalized
    afterwards and WAPE scores the median, so the median gets the fit time. Each keeps the round with the lowest
    pinball loss on the validation examples (all their steps), at most ``rounds``. ``volume_weighted`` weighs
    each row by its example's level, so the loss counts errors in pedestrians, as WAPE does, instead of in
    multiples of each sensor's level. ``max_bin`` (histogram bins per feature), ``bagging_fraction`` (share of
    rows each round reads) and ``feature_fraction`` (share of features each round reads) trade a little fit for
    time. Returns the rounds kept per quantile.
    """
    import lightgbm as lgb

    fit = ~validation
    x, y, w, rank = _rows(history[fit], calendar[fit], target[fit], calendar_features, steps_per_example, seed)
    binning = {"max_bin": max_bin}
    data = lgb.Dataset(x, y, weight=w if volume_weighted else None, params=binning, free_raw_data=True).construct()
    band = (
        data.subset(np.flatnonzero(rank < band_steps_per_example))
        if band_steps_per_example < steps_per_example
        else data
    )
    del x, y, w, rank
    valid_sets = []
    if validation.any():  # binned once with the median's mappers, which the band subset shares
        xv, yv, wv, _ = _rows(
            history[validation], calendar[validation], target[validation], calendar_features, 24, seed
        )
        valid_sets = [lgb.Dataset(xv, yv, weight=wv if volume_weighted else None, reference=data, params=binning)]
        del xv, yv, wv
    kept = {}
    for q in quantiles:
        params = {
            "objective": "quantile",
            "alpha": q,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "bagging_fraction": bagging_fraction,
            "bagging_freq": 1 if bagging_fraction < 1.0 else 0,
            "feature_fraction": feature_fraction,
            "seed": seed,
            "deterministic": True,
            "num_threads": num_threads,
            "verbose": -1,
        }
        callbacks = [lgb.early_stopping(early_stopping_rounds, verbose=False)] if valid_sets else []
        train_set = data if q == 0.5 else band
        booster = lgb.train(params, train_set, num_boost_round=rounds, valid_sets=valid_sets, callbacks=callbacks)
        kept[q] = booster.best_iteration or rounds
        booster.save_model(str(Path(out_dir, booster_file(q))), num_iteration=kept[q])
    return kept


class BoostedQuantiles:
    """The stored boosters of a model artifact; predicts ``[N, H, Q]`` in scaled units."""

    def __init__(self, directory: str | Path, quantiles: list[float], calendar_features: list[str]):
        import lightgbm as lgb

        self.directory, self.quantiles = Path(directory), list(quantiles)
        self.files = [Path(directory, booster_file(q)) for q in quantiles]
        self.boosters = [lgb.Booster(model_file=str(f)) for f in self.files]
        # One thread: serving runs many small requests, and threads per call cost more than they save.
        self._predictors: list[Callable[[np.ndarray], np.ndarray]] = [
            partial(b.predict, num_threads=1) for b in self.boosters
        ]
        self.compiled = self.inlined = False
        self.calendar_features = calendar_features

    def compile(self, cache_dir: str | Path, inline: bool = False) -> bool:
        """Swap LightGBM's tree walk for native code compiled from the same trees (lleaves, LLVM); True if done.

        Why: the trees dominate a forecast's cost and grow with its rows (24 per sensor): LightGBM walks the
        trees at ~25 ns each per row, the compiled forest at ~8 ns, with answers equal to 1e-9 (checked here on
        a probe before the swap). Compiling takes ~1 s per booster, once per model: the object code is cached in
        ``cache_dir`` under the hash of the model text, the compiler's versions and ``inline``. ``inline``
        (LLVM inlines each tree into the forest) makes the trees another ~2.7x faster (a 512-sensor forecast of
        300-round boosters 133 -> 49 ms) for ~18 s of compilation per booster: see ``compile_inlined_aside``.
        Without lleaves, or if anything fails, what served before stays.
        """
        try:
            import lleaves
        except ImportError:
            logger.warning("lleaves is not installed: the boosters run in LightGBM")
            return False
        cache = Path(cache_dir)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            compiler = f"lleaves {version('lleaves')}, llvmlite {version('llvmlite')}, {platform.machine()}"
            compiled = [self._compile_one(lleaves.Model, compiler, f, cache, inline) for f in self.files]
            probe = _probe_rows(self.boosters[0].num_feature())
            for booster, native in zip(self.boosters, compiled, strict=True):
                expected, got = booster.predict(probe, num_threads=1), native(probe)
                if not np.allclose(got, expected, rtol=1e-9, atol=1e-9):
                    raise ValueError(f"compiled trees differ from LightGBM by {np.abs(got - expected).max():.3g}")
        except Exception as exc:  # a compiler problem must never stop the model from serving
            logger.warning("boosters not compiled (inline=%s), the previous trees serve: %s", inline, exc)
            return False
        self._predictors, self.compiled, self.inlined = compiled, True, inline  # one swap: calls see old or new
        return True

    def compile_inlined_aside(self, cache_dir: str | Path) -> bool:
        """Compile the inlined forest in a separate process, then swap it in; True if it serves now.

        Why aside: lleaves builds the trees' IR in Python, so compiling in the serving process would hold its GIL
        for tens of seconds. A spawned process writes the object code to ``cache_dir``; this process then only
        loads it (and checks it on the probe). Meant for a background thread: the forest compiled without inlining
        serves meanwhile, and a cached inlined forest (a restart, a second replica sharing the cache) is quick.
        """
        if not self.compiled:
            return False
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as worker:
                built = worker.submit(_compile_inlined, self.directory, self.quantiles, str(cache_dir)).result()
        except Exception as exc:  # e.g. the worker killed for memory: the forest compiled without inlining stays
            logger.warning("inlined trees not built, the compiled trees keep serving: %s", exc)
            return False
        return built and self.compile(cache_dir, inline=True)

    @staticmethod
    def _compile_one(
        model_class, compiler: str, model_file: Path, cache: Path, inline: bool
    ) -> Callable[[np.ndarray], np.ndarray]:
        """One booster compiled, or loaded from ``cache`` when its object code is there and intact.

        Loading object code runs it: a damaged file would crash the process, not raise. So each file is stored
        with the SHA-256 of its bytes beside it, checked before loading; a mismatch means compile afresh. Both are
        written atomically (``storage.write_bytes_atomic``): another server process never loads half a file.
        """
        variant = compiler + (", inlined" if inline else "")
        key = hashlib.sha256(model_file.read_bytes() + variant.encode()).hexdigest()[:32]
        target, digest_file = cache / f"{key}.o", cache / f"{key}.o.sha256"
        model = model_class(model_file=str(model_file))
        if target.exists() and digest_file.exists() and _sha256(target.read_bytes()) == digest_file.read_text():
            model.compile(cache=str(target), finline=inline)
            return partial(model.predict, n_jobs=1)
        with tempfile.TemporaryDirectory(prefix="cityscale-trees-") as scratch:
            built = Path(scratch, "forest.o")
            model.compile(cache=str(built), finline=inline)  # compiles, and writes the object code to ``built``
            code = built.read_bytes()
        storage.write_bytes_atomic(str(target), code)
        storage.write_bytes_atomic(str(digest_file), _sha256(code).encode())
        return partial(model.predict, n_jobs=1)

    def predict_scaled(self, history: np.ndarray, calendar: np.ndarray) -> np.ndarray:
        """Quantiles ``[N, H, Q]`` in scaled units, sorted: each booster is fit on its own, so raw ones may cross."""
        x, _ = features(history, calendar, self.calendar_features)
        if self.compiled:  # lleaves reads float64: convert once, not once per booster
            x = x.astype(np.float64)
        n, horizon = calendar.shape[:2]
        out = [predict(x).reshape(n, horizon) for predict in self._predictors]
        return np.sort(np.stack(out, axis=-1), axis=-1)


def _compile_inlined(directory: Path, quantiles: list[float], cache_dir: str) -> bool:
    """In the worker process of ``compile_inlined_aside``: compile and cache the inlined forest of each booster."""
    return BoostedQuantiles(directory, quantiles, []).compile(cache_dir, inline=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _probe_rows(n_features: int) -> np.ndarray:
    """Rows to compare two implementations of a forest on: spread values, zeros and missing ones."""
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.normal(0.0, 2.0, (64, n_features)), rng.uniform(0.0, 30.0, (64, n_features))])
    rows[::5, ::3] = np.nan
    rows[1::7, 1::4] = 0.0
    return rows.astype(np.float32)

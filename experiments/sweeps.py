"""Sweeps over trained ICL transformers, one per setting and training seed (a *cell*): each finished
cell is saved with the settings that made it and the running one is checkpointed, so an interrupted
sweep resumes where it stopped; statistics get percentile-bootstrap intervals that resample
training seeds and test prompts together."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from icl_bayes.model import InvalidArgument, LinearICL
from icl_bayes.pretrain import Pretrainer, pretrain


def cached_cell(folder: Path, name: str, settings: dict[str, Any],
                compute: Callable[[Path], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays of cell ``name``: read from ``folder/name.npz`` when it was saved with ``settings``,
    else ``compute(checkpoint)`` (``checkpoint`` the path its training may resume from), saved
    atomically, and its checkpoint removed."""
    done, checkpoint = folder / f"{name}.npz", folder / f"{name}.msgpack"
    if done.exists():
        saved = np.load(done)
        if json.loads(str(saved["settings"])) == settings:
            return {k: saved[k] for k in saved.files if k != "settings"}
    folder.mkdir(parents=True, exist_ok=True)
    out = compute(checkpoint)
    partial = folder / f".{name}.npz"
    np.savez(partial, allow_pickle=False, settings=np.asarray(json.dumps(settings)), **out)
    partial.replace(done)
    for leftover in folder.glob(f"{name}.*"):  # the checkpoint and what early stopping kept beside it
        if leftover != done:
            leftover.unlink()
    return out


def train(trainer: Pretrainer, model: LinearICL, T: int, steps: int, batch: int, seed: int, checkpoint: Path,
          settings: dict[str, Any], pool: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Pretrain ``trainer`` to ``steps`` (resuming from ``checkpoint`` when it holds these ``settings``),
    checkpointing every tenth of the run."""
    if checkpoint.exists():
        trainer.load(checkpoint, settings)
    pretrain(trainer, model, T, steps, batch, seed, pool, checkpoint, max(1, steps // 10), settings)


def evaluation_steps(steps: int, evaluations: int, first: int | None = None) -> list[int]:
    """The steps after which early stopping evaluates: ``evaluations`` equal stretches of ``steps``, or from
    ``first`` to ``steps`` in geometric progression (dense where a run on few prompts overfits within
    a few hundred steps); strictly increasing and ending at ``steps``."""
    if first is None:
        every = max(1, steps // evaluations)
        points = [min(steps, every * (i + 1)) for i in range(evaluations)]
    else:
        points = np.geomspace(max(1, first), steps, evaluations).round().astype(int).tolist()
    return sorted(set(points[:-1]) | {steps})


def train_early_stopped(trainer: Pretrainer, model: LinearICL, T: int, steps: int, batch: int, seed: int,
                        checkpoint: Path, settings: dict[str, Any], validation: Callable[[Pretrainer], float],
                        evaluations: int, pool: tuple[np.ndarray, np.ndarray] | None = None,
                        first: int | None = None) -> dict[str, np.ndarray]:
    """Pretrain ``trainer`` as ``train`` does, evaluate the held-out loss ``validation(trainer)`` at the
    ``evaluation_steps(steps, evaluations, first)``, and end with the parameters of the lowest (early
    stopping: the regularized run of a fixed pretraining set, and on fresh prompts the best of the
    last states of a run).

    Resumes from ``checkpoint`` like ``train``; the best state so far and the curve are kept beside it
    (``NAME.best.msgpack``, ``NAME.curve.json``) and removed with it by ``cached_cell``. Returns
    ``validation_steps`` and ``validation`` ``[evaluations]`` (the curve) and ``stopped_at`` (the step
    of the parameters kept)."""
    from ntk_lab.cache import write_atomically

    best, curve_path = checkpoint.with_suffix(".best.msgpack"), checkpoint.with_suffix(".curve.json")
    if checkpoint.exists():
        trainer.load(checkpoint, settings)
    curve = json.loads(curve_path.read_text()) if checkpoint.exists() and curve_path.exists() else []
    points = evaluation_steps(steps, evaluations, first)
    while not curve or curve[-1][0] < steps:
        end = next(p for p in points if p > (curve[-1][0] if curve else 0))
        if trainer.step < end:  # else it stopped after the checkpoint at end, before evaluating
            pretrain(trainer, model, T, end, batch, seed, pool, checkpoint, end, settings)
        loss = float(validation(trainer))
        if not np.isfinite(loss):
            raise InvalidArgument(f"the held-out loss is {loss} at step {trainer.step}: lower --lr")
        if not curve or loss < min(v for _, v in curve):
            trainer.save(best, settings)
        curve.append((trainer.step, loss))
        write_atomically(curve_path, json.dumps(curve).encode())
    trainer.load(best, settings)
    steps_done, losses = (np.asarray(v) for v in zip(*curve))
    return {"validation_steps": steps_done, "validation": losses, "stopped_at": np.asarray(trainer.step)}


def bootstrap(statistic: Callable[[dict[str, np.ndarray]], Any], per_prompt: dict[str, np.ndarray],
              resamples: int, seed: int = 0) -> list[Any]:
    """``statistic`` of the cell means, once per resample.

    ``per_prompt`` maps names to arrays ``[seeds, cells, prompts]``; a resample draws seeds and test
    prompts with replacement (the same draw for every cell and array, which keeps comparisons
    between cells paired) and passes ``statistic`` the means ``[cells]`` over both.
    """
    rng = np.random.default_rng(seed)
    s, _, n = next(iter(per_prompt.values())).shape
    out = []
    for _ in range(resamples):
        seeds, prompts = rng.integers(0, s, s), rng.integers(0, n, n)
        out.append(statistic({k: v[seeds][:, :, prompts].mean(axis=(0, 2)) for k, v in per_prompt.items()}))
    return out


def parse_ints(text: str, name: str) -> list[int]:
    """``"2,8,32"`` -> ``[2, 8, 32]``; anything else is one error line."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidArgument(f"--{name} takes comma-separated integers, got '{text}'") from None
    if not values:
        raise InvalidArgument(f"--{name} is empty: give comma-separated integers")
    return values


def stack(cells: list[list[dict[str, np.ndarray]]], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The cells' arrays ``cells[seed][cell][name] [prompts]`` as ``name: [seeds, cells, prompts]``."""
    return {name: np.asarray([[cell[name] for cell in row] for row in cells]) for name in names}


def summarize(per_prompt: dict[str, np.ndarray]) -> dict[str, list]:
    """For each ``name: [seeds, cells, prompts]``: ``name`` the mean per cell, ``name_per_seed`` each
    seed's means ``[seeds][cells]`` and ``name_seed_sd`` their standard deviation per cell."""
    out: dict[str, list] = {}
    for name, values in per_prompt.items():
        per_seed = values.mean(axis=2)
        sd = per_seed.std(axis=0, ddof=1) if len(per_seed) > 1 else np.zeros(per_seed.shape[1])
        out |= {name: per_seed.mean(axis=0).tolist(), f"{name}_per_seed": per_seed.tolist(), f"{name}_seed_sd": sd.tolist()}
    return out

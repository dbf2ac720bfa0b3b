"""``python -m icl_bayes.pretrain``: pretrain a small transformer on ICL prompts, then compare it with BMA.

    python -m icl_bayes.pretrain --d 8 --T 32 --steps S --out DIR [--layers 2] [--prompts N] [--prior finite:M]
        [--curriculum D0,T0,EVERY]

Pretraining minimizes the squared error of every label given the prompt before it,
``(1/(T+1)) Σ_t (ŷ_t - y_t)²`` (``--loss mse``), or its Gaussian negative log-likelihood
``(1/(T+1)) Σ_t ½[log 2π s_t² + (y_t - ŷ_t)² / s_t²]`` with a predicted variance ``s_t²`` (``--loss nll``:
the likelihood the paper's pretraining maximizes; BMA's own predictive is ``N(ŷ_BMA, σ²(1 + xᵀPx))``), with Adam, on fresh prompts each step (or on a fixed set of
``--prompts N`` prompts, the pretraining set). Each step's batch comes from the stream ``(seed, "pretraining", step)``, so a run
is deterministic; ``--curriculum`` trains on fewer active dimensions and examples first (Garg et al.,
``curriculum_stage``). ``DIR/checkpoint.msgpack`` is written atomically every ``--checkpoint-every`` steps
and at least once a minute (``SAVE_EVERY_S``), with the settings that determine training
(``TRAINING_SETTINGS``), and a rerun with the same settings resumes from it (``--steps`` may grow); other settings are one error line, ``--restart`` starts over.
Then ``DIR/curves.json`` holds the simulate curves with ``transformer`` added, and ``transformer_vs_bma``: the mean of ``(ŷ_transformer - ŷ_BMA)²`` at every T, the
pretraining error in the paper's decomposition (ICL error = BMA error + pretraining error), and with
``--loss nll`` under a Gaussian prior ``transformer_regret``: the network's cumulative log-loss regret
against the oracle beside its expectation, BMA's closed form plus ``Σ KL(BMA || network)``
(``icl_bayes.evaluate.predictive_regret``).
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from icl_bayes.evaluate import (
    curves,
    figures,
    predictions,
    predictive_regret,
    print_summary,
    regret_summary,
)
from icl_bayes.model import GaussianPrior, InvalidArgument, LinearICL, Prompts, stream
from icl_bayes.simulate import _parser, setup
from icl_bayes.transformer import ICLTransformer
from ntk_lab.cli import cli_main
from ntk_lab.provenance import provenance

TRAINING_SETTINGS = ("d", "T", "prior", "noise", "tau", "seed", "lr", "batch_size", "layers", "width", "heads", "prompts",
                     "loss")
LOSSES = ("mse", "nll")


def gaussian_nll(mean: jax.Array, log_var: jax.Array, y: jax.Array) -> jax.Array:
    """``mean_t ½[log 2π + log s² + (y - μ)² / s²]`` over every label, ``s² = exp(log_var)``."""
    return jnp.mean(0.5 * (np.log(2 * np.pi) + log_var + (y - mean) ** 2 * jnp.exp(-log_var)))


def curriculum_stage(curriculum: tuple[int, int, int] | None, d: int, T: int, step: int) -> tuple[int, int]:
    """The active dimensions and examples ``(d_t, T_t)`` at ``step`` of Garg et al.'s curriculum
    ``(d0, T0, every)``: ``d0`` dimensions and ``T0`` examples at first, one dimension and two examples
    more every ``every`` steps, up to ``(d, T)``; without a curriculum, ``(d, T)``."""
    if curriculum is None:
        return d, T
    d0, T0, every = curriculum
    k = step // every
    return min(d, d0 + k), min(T, T0 + 2 * k)


def restrict(prompts: Prompts, active: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of the same prompts in the first ``active`` dimensions: the other coordinates of x set to
    0 and their share ``<w, x>`` taken out of y, so the labels are ``<w_{:active}, x_{:active}> + ε`` with
    the same noise."""
    x = prompts.x.copy()
    x[..., active:] = 0
    return x, prompts.y - np.einsum("ntd,nd->nt", prompts.x[..., active:], prompts.w[:, active:])


def batch(model: LinearICL, T: int, size: int, seed: int, step: int, pool: tuple[np.ndarray, np.ndarray] | None,
          curriculum: tuple[int, int, int] | None = None):
    """The batch of ``step``: fresh prompts from ``(seed, step)`` (at the curriculum's stage: ``T_t``
    examples in ``d_t`` active dimensions, ``restrict``), or rows of the fixed ``pool``."""
    if pool is None:
        d_t, T_t = curriculum_stage(curriculum, model.d, T, step)
        prompts = model.sample(size, T_t, seed=stream(seed, "pretraining", step))
        return restrict(prompts, d_t) if d_t < model.d else (prompts.x, prompts.y)
    rows = np.random.default_rng(stream(seed, "pretraining", step)).integers(0, len(pool[0]), size)
    return pool[0][rows], pool[1][rows]


def learning_rate(lr: float, decay_steps: int | None) -> float | optax.Schedule:
    """Adam's step size: ``lr`` throughout, or with ``decay_steps`` the cosine decay
    ``η_t = lr · ½(1 + cos(π · min(t, N) / N))``, ``N = decay_steps``: ``lr`` at the first step, 0 from step N on."""
    return lr if decay_steps is None else optax.cosine_decay_schedule(lr, decay_steps)


def split_batch(a: jax.Array, parts: int) -> jax.Array:
    """``[n, ...] -> [parts, n / parts, ...]``: the batch as ``parts`` equal micro-batches, in order."""
    return a.reshape(parts, a.shape[0] // parts, *a.shape[1:])


@functools.lru_cache(maxsize=32)
def _programs(width: int, depth: int, heads: int, lr: float, loss: str, decay_steps: int | None = None,
              microbatches: int = 1) -> tuple:
    """The network, its optimizer and the jitted training step and forward pass of one architecture and
    objective, shared by every ``Pretrainer`` of it (a sweep of many seeds or pools compiles once per shape).

    With ``microbatches = m`` the step's loss and gradient are the mean of those of ``m`` equal
    micro-batches, computed one after another: the objective is a mean over every label, so
    ``(1/m) Σ_j ∇L(B_j) = ∇L(B)`` and the step is the full batch's up to float rounding. Only the
    memory traffic changes: on the CPU a four-layer network's backward pass on 64 prompts runs about
    twice as fast in four parts of 16 as in one (its activations then stay in cache)."""
    net = ICLTransformer(width, depth, heads, outputs=1 if loss == "mse" else 2)
    opt = optax.adam(learning_rate(lr, decay_steps))

    def objective(params, x, y):
        out = net.apply({"params": params}, x, y)
        return jnp.mean((out - y) ** 2) if loss == "mse" else gaussian_nll(out[..., 0], out[..., 1], y)

    def value_and_grad(params, x, y):
        if microbatches == 1:
            return jax.value_and_grad(objective)(params, x, y)
        values, grads = jax.lax.map(lambda xy: jax.value_and_grad(objective)(params, *xy),
                                    (split_batch(x, microbatches), split_batch(y, microbatches)))
        return values.mean(), jax.tree_util.tree_map(lambda g: g.mean(axis=0), grads)

    def update(params, opt_state, x, y):
        value, grads = value_and_grad(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    def updates(params, opt_state, xs, ys):
        def step(state, xy):
            params, opt_state, value = update(*state, *xy)
            return (params, opt_state), value

        (params, opt_state), values = jax.lax.scan(step, (params, opt_state), (xs, ys))
        return params, opt_state, values

    return (net, opt, jax.jit(update), jax.jit(lambda params, x, y: net.apply({"params": params}, x, y)),
            jax.jit(value_and_grad), jax.jit(updates))


class Pretrainer:
    """The network, its optimizer (Adam at ``learning_rate(lr, decay_steps)``), and the training state,
    saved to and resumed from a checkpoint. ``microbatches``: each step's batch is split into that many
    equal parts whose gradients are averaged (the same step; ``_programs``). ``keep_losses``: record every
    step's training loss in ``losses`` and its checkpoint; a sweep that reads only held-out losses passes
    False, which keeps a checkpoint at the size of the parameters and optimizer state however long the run
    (eight bytes a step otherwise: 65 MB at eight million steps, rewritten once a minute)."""

    def __init__(self, width: int, depth: int, heads: int, lr: float, d: int, T: int, seed: int,
                 loss: str = "mse", decay_steps: int | None = None, microbatches: int = 1,
                 keep_losses: bool = True) -> None:
        if loss not in LOSSES:
            raise InvalidArgument(f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if microbatches < 1:
            raise InvalidArgument(f"--microbatches must be at least 1, got {microbatches}")
        self.net, self.opt, self._update, self._apply, self._gradient, self._updates = _programs(
            width, depth, heads, lr, loss, decay_steps, microbatches)
        self.microbatches = microbatches
        x, y = jnp.zeros((1, T + 1, d)), jnp.zeros((1, T + 1))
        self.params = self.net.init(jax.random.PRNGKey(seed), x, y)["params"]
        self.opt_state = self.opt.init(self.params)
        self.step = 0
        self.losses: list[float] = []
        self.keep_losses = keep_losses
        self.loss = loss

    def save(self, path: Path, settings: dict | None = None) -> None:
        """Serialize the training state and the ``settings`` that produced it to ``path`` atomically."""
        from ntk_lab.cache import write_atomically

        write_atomically(path, flax.serialization.msgpack_serialize(
            {"params": flax.serialization.to_state_dict(self.params),
             "opt_state": flax.serialization.to_state_dict(self.opt_state),
             "step": self.step, "losses": np.asarray(self.losses, np.float64),
             "settings": json.dumps(settings or {}, sort_keys=True)}))

    def load(self, path: Path, settings: dict | None = None) -> None:
        """Restore the state saved in ``path``; with ``settings``, first check they are the ones it was
        trained with (a damaged file or other settings: ``InvalidArgument``)."""
        try:
            state = flax.serialization.msgpack_restore(path.read_bytes())
            saved = json.loads(state.get("settings", "{}"))
        except Exception:  # msgpack raises several unrelated types on damaged bytes
            raise InvalidArgument(f"{path} is damaged: delete it or pass --restart to start over") from None
        if settings is not None and saved != settings:
            changed = [k for k in settings if saved.get(k) != settings[k]] or ["(settings not recorded)"]
            was = " ".join(f"--{k.replace('_', '-')} {saved[k]}" for k in changed if k in saved)
            raise InvalidArgument(
                f"{path} was trained with other settings ({', '.join(changed)}{': ' + was if was else ''}): "
                "rerun with those, choose another --out, or pass --restart to start over")
        try:
            self.params = flax.serialization.from_state_dict(self.params, state["params"])
            self.opt_state = flax.serialization.from_state_dict(self.opt_state, state["opt_state"])
        except (KeyError, ValueError) as e:
            raise InvalidArgument(f"{path} does not fit this network ({str(e).splitlines()[0]}): pass --restart") from None
        self.step = int(state["step"])
        self.losses = [float(v) for v in np.asarray(state["losses"]).reshape(-1)] if self.keep_losses else []

    def _check_batch(self, n: int) -> None:
        if n % self.microbatches:
            raise InvalidArgument(f"a batch of {n} prompts does not split into {self.microbatches} equal "
                                  "micro-batches: choose --microbatches dividing the batch size")

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One Adam step on the batch ``x [n, T+1, d]``, ``y [n, T+1]``; returns its loss."""
        self._check_batch(len(x))
        self.params, self.opt_state, value = self._update(self.params, self.opt_state, jnp.asarray(x), jnp.asarray(y))
        self.step += 1
        if self.keep_losses:
            self.losses.append(float(value))
        return float(value)

    def train_steps(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """``k`` Adam steps, one on each batch ``xs [k, n, T+1, d]``, ``ys [k, n, T+1]``, in one program (a
        ``lax.scan`` of ``train_step``'s update: the same steps, without a return to Python between them);
        returns their losses ``[k]``."""
        self._check_batch(xs.shape[1])
        self.params, self.opt_state, values = self._updates(self.params, self.opt_state, jnp.asarray(xs), jnp.asarray(ys))
        values = np.asarray(values, np.float64)
        self.step += len(values)
        if self.keep_losses:
            self.losses.extend(values.tolist())
        return values

    def gradient(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
        """The training loss on the batch ``x [n, T+1, d]``, ``y [n, T+1]`` and its gradient in the parameters
        (a tree shaped like ``params``), as a training step computes them."""
        value, grads = self._gradient(self.params, jnp.asarray(x), jnp.asarray(y))
        return float(value), grads

    def objective(self, x: np.ndarray, y: np.ndarray) -> float:
        """The pretraining loss on prompts ``x [n, T+1, d]``, ``y [n, T+1]`` (the squared error or the Gaussian
        negative log-likelihood, the mean over every label; in float64): on prompts it was not trained on,
        the held-out loss."""
        out, y = self.outputs(x, y).astype(np.float64), np.asarray(y, np.float64)
        if self.loss == "mse":
            return float(np.mean((out - y) ** 2))
        mean, log_var = out[..., 0], out[..., 1]
        return float(np.mean(0.5 * (np.log(2 * np.pi) + log_var + (y - mean) ** 2 * np.exp(-log_var))))

    def outputs(self, x: np.ndarray, y: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """The network's outputs for prompts ``x [n, T+1, d]``, ``y [n, T+1]``: ``[n, T+1]`` (mse) or
        ``[n, T+1, 2]`` (nll: mean and log variance)."""
        return np.concatenate([np.asarray(self._apply(self.params, jnp.asarray(x[s : s + chunk]),
                                                      jnp.asarray(y[s : s + chunk])))
                               for s in range(0, len(x), chunk)])

    def predict(self, x: np.ndarray, y: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """``ŷ [n, T+1]``: the predicted label (the predictive mean with ``loss="nll"``)."""
        out = self.outputs(x, y, chunk)
        return out if self.loss == "mse" else out[..., 0]

    def predictive_variance(self, x: np.ndarray, y: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """``s² [n, T+1]``, the predicted variance of each label (``loss="nll"`` only)."""
        if self.loss != "nll":
            raise InvalidArgument("a network pretrained with --loss mse predicts no variance")
        return np.exp(self.outputs(x, y, chunk)[..., 1])


#: steps per program in ``pretrain``: a chunk of this many batches is one ``Pretrainer.train_steps`` call
#: (1.4-2x the steps per second of one call a step on one CPU core: ``benchmarks/icl.py``)
CHUNK = 128
#: wall-clock seconds after which ``pretrain`` checkpoints at the end of the next chunk (a stop loses at most this)
SAVE_EVERY_S = 60.0


def pretrain(trainer: Pretrainer, model: LinearICL, T: int, steps: int, batch_size: int, seed: int,
             pool: tuple[np.ndarray, np.ndarray] | None, checkpoint: Path | None, every: int,
             settings: dict | None = None, curriculum: tuple[int, int, int] | None = None) -> float:
    """Train until ``trainer.step == steps`` (on ``batch``es, with the ``curriculum`` if given),
    checkpointing (with ``settings``) every ``every`` steps, and between those at the end of the first
    chunk after ``SAVE_EVERY_S`` seconds without one (a stop loses at most about that much work); returns
    steps/s. The steps run ``CHUNK`` at a time in one program (``Pretrainer.train_steps``), each on the
    batch of its own step, so where a run stops and resumes does not change what it computes (up to float
    rounding; a timed checkpoint cuts no chunk, so a run resumed from one takes exactly the same chunks)."""
    from ntk_lab.progress import progress

    start, first = time.perf_counter(), trainer.step
    saved = start
    with progress(total=steps, initial=trainer.step, desc="pretrain", unit="step") as bar:
        while trainer.step < steps:
            end = min(steps, trainer.step + CHUNK, (trainer.step // every + 1) * every)
            if curriculum is not None:  # one stage per chunk: its batches share a shape
                end = min(end, (trainer.step // curriculum[2] + 1) * curriculum[2])
            batches = [batch(model, T, batch_size, seed, s, pool, curriculum) for s in range(trainer.step, end)]
            if len(batches) == CHUNK:
                loss = float(trainer.train_steps(np.stack([x for x, _ in batches]), np.stack([y for _, y in batches]))[-1])
            else:  # a chunk cut short by a checkpoint or the end: step by step, not one more program shape
                loss = [trainer.train_step(x, y) for x, y in batches][-1]
            bar.update(len(batches))
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if checkpoint is not None and (trainer.step % every == 0 or trainer.step == steps
                                           or time.perf_counter() - saved >= SAVE_EVERY_S):
                trainer.save(checkpoint, settings)
                saved = time.perf_counter()
    done = trainer.step - first
    return done / (time.perf_counter() - start) if done else float("nan")


EPILOG = """outputs, in --out:
  checkpoint.msgpack  the training state and the settings that determine it (written every
                      --checkpoint-every steps and at least once a minute); run the same command
                      again to resume, --restart to start over
  curves.json         the simulate curves with 'transformer' added, transformer_vs_bma (the mean of
                      (ŷ_transformer - ŷ_BMA)² at every T) and the training loss; with a Gaussian
                      prior, relative_excess: each predictor's E(ŷ - ŷ_BMA)² / Bayes risk at every
                      T with a 95% interval (transformer within 5% everywhere: 'within'); with --loss nll
                      and a Gaussian prior, transformer_regret: its cumulative log-loss regret
                      against the oracle and its expectation, BMA's closed form + Σ KL
  mse.png, excess.png, regret.png  as python -m icl_bayes.simulate draws them
"""


def parse_curriculum(text: str | None, d: int, T: int, prompts: int) -> tuple[int, int, int] | None:
    """``"D0,T0,EVERY"`` -> ``(D0, T0, EVERY)`` with 1 <= D0 <= d, 1 <= T0 <= T, EVERY >= 1; bad values are one line."""
    if text is None:
        return None
    try:
        d0, T0, every = (int(v) for v in text.split(","))
    except ValueError:
        raise InvalidArgument(f"--curriculum takes D0,T0,EVERY (three integers, e.g. 5,11,2000), got '{text}'") from None
    if not (1 <= d0 <= d and 1 <= T0 <= T and every >= 1):
        raise InvalidArgument(f"--curriculum {text}: need 1 <= D0 <= --d ({d}), 1 <= T0 <= --T ({T}) and EVERY >= 1")
    if prompts:
        raise InvalidArgument("--curriculum draws fresh prompts at each stage: it cannot be combined with --prompts")
    return d0, T0, every


def main(argv: list[str] | None = None) -> None:
    p = _parser("python -m icl_bayes.pretrain", "Pretrain a small transformer on ICL prompts, then compare it with BMA.",
                EPILOG)
    p.set_defaults(T=32, trials=1000, out="runs/icl-pretrain")
    p.add_argument("--steps", type=int, default=2000, help="pretraining steps")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per step")
    p.add_argument("--microbatches", type=int, default=1,
                   help="split each step's batch into this many equal parts and average their gradients: the same "
                        "step, faster on the CPU for deep networks (4 for 64 prompts)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--layers", type=int, default=2, help="transformer blocks")
    p.add_argument("--width", type=int, default=64, help="model width")
    p.add_argument("--heads", type=int, default=4, help="attention heads (a divisor of --width)")
    p.add_argument("--prompts", type=int, default=0, help="pretraining-set size (0: fresh prompts every step)")
    p.add_argument("--loss", default="mse", choices=LOSSES,
                   help="pretraining objective: squared error, or the Gaussian negative log-likelihood with a predicted variance")
    p.add_argument("--curriculum", default=None, metavar="D0,T0,EVERY",
                   help="Garg et al.'s curriculum: start with D0 active dimensions and T0 examples, one dimension "
                        "and two examples more every EVERY steps, up to --d and --T (e.g. 5,11,2000 for d = 20, T = 40)")
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    p.add_argument("--restart", action="store_true", help="ignore a checkpoint in --out and train from step 0")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "microbatches", "layers", "width", "heads", "checkpoint_every"):
        if getattr(args, name) < 1:
            raise InvalidArgument(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.batch_size % args.microbatches:
        raise InvalidArgument(f"--microbatches ({args.microbatches}) must divide --batch-size ({args.batch_size})")
    if args.width % args.heads:
        raise InvalidArgument(f"--width ({args.width}) must be a multiple of --heads ({args.heads})")
    if args.prompts < 0:
        raise InvalidArgument(f"--prompts must be 0 (fresh prompts) or positive, got {args.prompts}")
    curriculum = parse_curriculum(args.curriculum, args.d, args.T, args.prompts)
    model, config = setup(args)
    config.update({k: getattr(args, k) for k in ("steps", "batch_size", "lr", "layers", "width", "heads", "prompts", "loss")})
    if curriculum:
        config["curriculum"] = ",".join(map(str, curriculum))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.msgpack"
    trainer = Pretrainer(args.width, args.layers, args.heads, args.lr, args.d, args.T, args.seed, args.loss,
                         microbatches=args.microbatches)
    settings = {k: config[k] for k in TRAINING_SETTINGS} | ({"curriculum": config["curriculum"]} if curriculum else {})
    if checkpoint.exists() and not args.restart:
        trainer.load(checkpoint, settings)
        print(f"resumed from step {trainer.step}", flush=True)
    pool = None
    if args.prompts:
        fixed = model.sample(args.prompts, args.T, seed=stream(args.seed, "pool"))
        pool = (fixed.x, fixed.y)
    steps_per_s = pretrain(trainer, model, args.T, args.steps, args.batch_size, args.seed, pool, checkpoint,
                           args.checkpoint_every, settings, curriculum)
    prompts = model.sample(args.trials, args.T, seed=stream(args.seed, "evaluation"), misspecified=args.misspecified)
    preds = predictions(model, prompts, config["beta"], args.ridge_lambda)
    preds["transformer"] = trainer.predict(prompts.x, prompts.y)
    result = {**provenance("python -m icl_bayes.pretrain", argv), **curves(model, prompts, preds, config)}
    result["transformer_vs_bma"] = np.mean((preds["transformer"] - preds["bma"]) ** 2, axis=0)[1:].tolist()
    if args.loss == "nll" and isinstance(model.prior, GaussianPrior):
        result["transformer_regret"] = regret_summary(predictive_regret(
            model, prompts, preds["transformer"], trainer.predictive_variance(prompts.x, prompts.y)))
    result["training"] = {"steps": trainer.step, "steps_per_s": steps_per_s,
                          "loss": trainer.losses[:: max(1, len(trainer.losses) // 200)]}
    (out / "curves.json").write_text(json.dumps(result, indent=1))
    figures(result, out)
    print_summary(result)
    gap = result["transformer_vs_bma"]
    print(f"transformer vs BMA, mean (ŷ_tf - ŷ_bma)²: T=1 {gap[0]:.4f}, T={args.T // 2} {gap[args.T // 2 - 1]:.4f}, "
          f"T={args.T} {gap[-1]:.4f}; {steps_per_s:.1f} steps/s")
    if "relative_excess" in result:
        rel = result["relative_excess"]["transformer"]
        worst = int(np.argmax(rel["mean"]))
        print(f"transformer's relative excess over BMA's Bayes risk, E(ŷ_tf - ŷ_bma)² / R_T: largest at T={worst + 1}, "
              f"{rel['mean'][worst]:.3f} [{rel['lo'][worst]:.3f}, {rel['hi'][worst]:.3f}]; within "
              f"{rel['tolerance']:.0%} at every T: {'yes' if rel['within'] else 'no'}")
    if "transformer_regret" in result:
        tr = result["transformer_regret"]
        print(f"transformer's regret after T={args.T}: simulated {tr['mean'][-1]:.3f} [{tr['lo'][-1]:.3f}, {tr['hi'][-1]:.3f}], "
              f"expected {tr['expected'][-1]:.3f} = BMA's closed form + Σ KL(BMA || transformer) {tr['kl'][-1]:.3f}")
    print(f"wrote {out / 'curves.json'}, mse.png, excess.png, regret.png, checkpoint.msgpack")


cli = cli_main(main, on_interrupt="the checkpoint holds the last saved step; run the same command again to resume")


if __name__ == "__main__":
    cli()

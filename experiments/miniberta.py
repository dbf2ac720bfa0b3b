"""Does pretraining make the prompt mean something? A MiniBERTa against its random twin on k-shot SST-2.

    python -m experiments.miniberta [--model miniberta-small] [--data_dir ../shared/data] [--seeds 13,21,42,87,100] [--text raw] [--out runs/miniberta]

The same architecture and tokenizer twice: the pretrained checkpoint (``ntk_lab.pretrain``) and the
random initialisation it started from (weights drawn as pretraining draws them, seed 0). For each,
``python -m ntk_lab.compare`` measures on k-shot SST-2 (the real GLUE data where ``--data-dir`` has
it) the zero-shot accuracy of the prompt ``S It was <mask>.`` with ``great`` / ``terrible`` and the
SGD-kernel predictor's accuracy (kernel ridge regression with the eNTK at θ0; λ and the f0 scale
chosen on the k-shot dev split), and the zero-shot AUC of ``f_great - f_terrible`` on the test set
(does the prompt rank the sentences by sentiment, whatever threshold argmax implies) and the accuracy of
the zero-shot classifier under contextual calibration (Zhao et al. 2021, ``ntk_lab.calibration``: the
label words' prior measured on content-free prompts and divided out, no label used). Chance is 0.5. The issue that made the MiniBERTas set the goal: the
pretrained model's zero-shot clearly above chance and its SGD kernel at 0.70 or more. Each model's
attention to the previous and the next token on 128 test prompts (``ntk_lab.attention``) says
whether it uses word order at all: uniform attention, a bag of words, pays ``1/n`` to each token;
``P(great) + P(terrible)`` at the mask (the whole vocabulary's softmax, 256 test prompts) says whether
the prompt's slot calls for the label words at all. A logistic probe on the prompted input's final
hidden states (at the mask, and their mean), trained on each k-shot train set and on 2000 labelled
train examples, says how much sentiment the representation carries linearly (``sentiment_probe``).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from experiments import report

GOAL = 0.70


def random_twin(model: str, folder: Path) -> Path:
    """A checkpoint folder with ``model``'s config and tokenizer and freshly initialised weights (seed 0)."""
    import jax
    import jax.numpy as jnp

    from ntk_lab.models import MaskedLM, load_masked_lm, save_masked_lm

    if (folder / "model.safetensors").exists():
        return folder
    loaded = load_masked_lm(model)
    ids = jnp.zeros((1, 2), jnp.int32)
    params = MaskedLM(loaded.config).init(jax.random.PRNGKey(0), ids, jnp.ones_like(ids))["params"]
    return save_masked_lm(folder, params, loaded.hf_config, loaded.tokenizer)


def encoded_test_set(model: str, data_dir: str, n: int | None = None, task_name: str = "sst2",
                     pad_multiple: int = 1, text: str = "raw") -> tuple[Any, Any, dict[str, Any]]:
    """``(loaded model, task, encoded prompts)`` of the first ``n`` test examples (all: None) of
    ``task_name`` (``text``: ``tasks.load_task_data``'s), encoded to at most 128 tokens or the model's length."""
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import encode
    from ntk_lab.tasks import TASKS, load_task_data

    task = TASKS[task_name]
    loaded = load_masked_lm(model)
    test = load_task_data(task, data_dir, text)[1][:n]
    return loaded, task, encode(task, test, loaded.tokenizer, min(128, loaded.config.max_length), pad_multiple=pad_multiple)


def zero_shot(model: str, data_dir: str, text: str = "raw") -> dict[str, Any]:
    """The prompt's zero-shot classifier on the whole test set, beyond argmax: ``zero_shot_auc``, the area
    under the ROC curve of ``f_great - f_terrible`` (does the prompt rank positive above negative
    sentences, whatever threshold argmax implies; 0.5: no), and ``zero_shot_calibrated``, the accuracy
    of contextual calibration (``ntk_lab.calibration``: the label words' prior measured on content-free
    inputs and divided out; no label used), with ``calibrated_positive_share``, the share it calls
    positive, and ``content_free_log_prior`` (log p̂ of terrible, great)."""
    import numpy as np
    from scipy.stats import rankdata

    from ntk_lab import calibration
    from ntk_lab.kernels import binary_margin
    from ntk_lab.prompts import PromptedClassifier

    loaded, task, encoded = encoded_test_set(model, data_dir, pad_multiple=16, text=text)
    classifier = PromptedClassifier.for_task(loaded, task)
    scores = np.asarray(classifier.logits(loaded.params, encoded, 64), np.float64)
    d, y = binary_margin(scores)[:, 0], encoded["labels"] == 1
    ranks = rankdata(d)
    prior = calibration.contextual_prior(classifier, loaded.params, task, min(128, loaded.config.max_length))
    predicted = calibration.calibrated(scores, prior)
    return {"zero_shot_auc": float((ranks[y].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (~y).sum())),
            "zero_shot_calibrated": float(np.mean(predicted == encoded["labels"])),
            "calibrated_positive_share": float(np.mean(predicted == 1)), "content_free_log_prior": prior.tolist()}


def word_order(model: str, data_dir: str, n: int = 128, task_name: str = "sst2", text: str = "raw") -> dict[str, Any]:
    """``ntk_lab.attention.position_use`` on the first ``n`` test prompts of ``task_name``: each layer's
    mean attention to the previous and the next token, against uniform attention's ``1/n``."""
    from ntk_lab.attention import position_use

    loaded, _, encoded = encoded_test_set(model, data_dir, n, task_name, text=text)
    return position_use(loaded, encoded)


def word_order_rows(name: str, found: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The table rows of a ``word_order`` result: per offset, each layer's attention beside ``1/n``."""
    out = []
    for offset, which in (("-1", "previous"), ("1", "next")):
        layers = ", ".join(f"{a:.3f}" for a in found["offsets"][offset])
        out.append((f"{name}: attention to the {which} token, layers 1..L", layers,
                    f"word order ignored: {found['uniform'][offset]:.3f} (1/n)"))
    return out


def label_word_mass(model: str, data_dir: str, n: int = 256, text: str = "raw") -> float:
    """Mean over the first ``n`` SST-2 test prompts of ``P(great) + P(terrible)`` at the mask, the
    softmax over the whole vocabulary: does the prompt's slot call for the label words at all
    (``2 / V`` for a model that knows nothing)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import label_word_ids
    from ntk_lab.tasks import TASKS, load_task_data

    task, loaded = TASKS["sst2"], load_masked_lm(model)
    at_mask = prompt_states(loaded, task, load_task_data(task, data_dir, text)[1][:n])["mask"]  # [n, d]
    vocabulary = jax.nn.softmax(loaded.vocab_logits(loaded.params, jnp.asarray(at_mask, jnp.float32)), axis=-1)  # [n, V]
    return float(np.asarray(vocabulary)[:, label_word_ids(task, loaded.tokenizer)].sum(1).mean())


def prompt_states(loaded: Any, task: Any, examples: list[Any], batch: int = 64) -> dict[str, Any]:
    """The final hidden states of ``examples`` prompted as ``task`` prompts them: ``mask [n, d]`` (at the
    mask), ``mean [n, d]`` (the mean over the prompt's tokens) and ``labels [n]``."""
    import numpy as np

    from ntk_lab.prompts import encode

    encoded = encode(task, examples, loaded.tokenizer, min(128, loaded.config.max_length))
    mask, mean = [], []
    for start in range(0, len(examples), batch):
        ids, valid = (encoded[k][start : start + batch] for k in ("input_ids", "attention_mask"))
        hidden = np.asarray(loaded.encode(loaded.params, ids, valid), np.float64)  # [b, l, d]
        mask.append(hidden[np.arange(len(ids)), encoded["mask_pos"][start : start + batch]])
        mean.append((hidden * valid[..., None]).sum(1) / valid.sum(1, keepdims=True))
    return {"mask": np.concatenate(mask), "mean": np.concatenate(mean), "labels": np.asarray(encoded["labels"])}


def probe_accuracy(train: dict[str, Any], test: dict[str, Any], features: str) -> float:
    """Test accuracy of the logistic probe (``ntk_lab.probe.fit_cv``: C by cross-validation on the train
    set) on ``features`` (``"mask"`` or ``"mean"`` of ``prompt_states``), each feature standardized by
    the train set's mean and standard deviation."""
    import numpy as np

    from ntk_lab.probe import fit_cv

    center, scale = train[features].mean(0), train[features].std(0)
    scale = np.where(scale > 0, scale, 1.0)
    head = fit_cv((train[features] - center) / scale, train["labels"], 2)
    return float(np.mean(head.logits((test[features] - center) / scale).argmax(1) == test["labels"]))


def sentiment_probe(model: str, data_dir: str, seeds: list[int], k: int, labelled: int = 2000,
                    text: str = "raw") -> dict[str, Any]:
    """How much sentiment the prompted input's final hidden states carry linearly: ``probe_accuracy`` on
    the SST-2 test set of the mask's state and of the mean state, trained on each seed's k-shot train
    set (``k_shot``: one accuracy per seed) and on ``labelled`` train examples drawn at random (seed 0).
    Not a bound on the SGD kernel (its features are gradients of every parameter), but a probe with
    ``labelled / 2k`` times the labels that stays below the goal says the representation carries too
    little sentiment for a k-shot predictor to reach it."""
    import numpy as np

    from ntk_lab.models import load_masked_lm
    from ntk_lab.tasks import TASKS, kshot_split, load_task_data

    task, loaded = TASKS["sst2"], load_masked_lm(model)
    train, test = load_task_data(task, data_dir, text)
    splits = [kshot_split(train, test, 2, k, seed) for seed in seeds]
    test_states = prompt_states(loaded, task, splits[0].test)
    drawn = [train[i] for i in np.random.default_rng(0).permutation(len(train))[:labelled]]
    large = prompt_states(loaded, task, drawn)
    shots = [prompt_states(loaded, task, split.train) for split in splits]
    return {"labelled": len(drawn), **{features: {"k_shot": [probe_accuracy(s, test_states, features) for s in shots],
                                                  "labelled": probe_accuracy(large, test_states, features)}
                                       for features in ("mask", "mean")}}


def compute(args: Any) -> dict[str, Any]:
    from ntk_lab.models import load_masked_lm
    from ntk_lab.protocol import CompareConfig, run

    out = Path(args.out)
    models = {"pretrained": args.model, "random": str(random_twin(args.model, out / "random-init"))}
    results = {"model": args.model, "data_dir": args.data_dir, "k": args.k, "seeds": args.seeds, "text": args.text,
               "vocab_size": load_masked_lm(args.model).config.vocab_size, "runs": {}}
    seeds = [int(s) for s in args.seeds.split(",")]
    for name, model in models.items():
        folder = out / name
        config = CompareConfig(task="sst2", model=model, data_dir=args.data_dir, k=args.k,
                               seeds=tuple(seeds), kernels=("sgd",),
                               optimizers=tuple(o for o in args.optimizers.split(",") if o), steps=args.steps,
                               eval_every=args.eval_every, implementation="structured", text=args.text)
        compared = run(config, folder)
        compared.write(folder)
        saved = compared.as_json()
        results["runs"][name] = {"summary": saved["summary"], "timing": saved["timing"],
                                 **zero_shot(model, args.data_dir, args.text),
                                 "word_order": word_order(model, args.data_dir, text=args.text),
                                 "label_word_mass": label_word_mass(model, args.data_dir, text=args.text),
                                 "probe": sentiment_probe(model, args.data_dir, seeds, args.k, text=args.text),
                                 "per_seed": {m: [r["accuracy"] for r in saved["runs"] if r["method"] == m]
                                              for m in saved["summary"]}}
    return results


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for name, run in result["runs"].items():
        for method, stats in run["summary"].items():
            if method in ("zero-shot", "kernel-sgd") or method.startswith("ft-"):
                theory = {"zero-shot": "chance 0.500" + (", goal: clearly above" if name == "pretrained" else ""),
                          "kernel-sgd": f"goal >= {GOAL:.2f}" if name == "pretrained" else "-"}.get(method, "-")
                out.append((f"{name}: {method}", f"{stats['mean']:.3f} ± {stats['std']:.3f}", theory))
        out.append((f"{name}: zero-shot AUC of f_great - f_terrible", f"{run['zero_shot_auc']:.3f}", "no ranking 0.500"))
        if "zero_shot_calibrated" in run:  # results from before it was measured lack it
            out.append((f"{name}: zero-shot, contextually calibrated (share called positive)",
                        f"{run['zero_shot_calibrated']:.3f} ({run['calibrated_positive_share']:.3f})",
                        "chance 0.500" + (", goal: clearly above" if name == "pretrained" else "")))
        if "label_word_mass" in run:  # results from before it was measured lack it
            out.append((f"{name}: P(great) + P(terrible) at the mask", f"{run['label_word_mass']:.4f}",
                        f"no knowledge: 2/V = {2 / result['vocab_size']:.4f}"))
        if "word_order" in run:  # results from before it was measured lack it
            out += word_order_rows(name, run["word_order"])
        if "probe" in run:  # results from before it was measured lack it
            found = run["probe"]
            for features, what in (("mask", "the mask's state"), ("mean", "the mean state")):
                shots = found[features]["k_shot"]
                out.append((f"{name}: logistic probe on {what}, {result['k']}-shot",
                            f"{statistics.mean(shots):.3f} ± {statistics.pstdev(shots):.3f}", "chance 0.500"))
                out.append((f"{name}: logistic probe on {what}, {found['labelled']} labels",
                            f"{found[features]['labelled']:.3f}", f"chance 0.500; kernel-sgd goal {GOAL:.2f}"))
    return out


def figure(result: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np

    methods = [m for m in ("zero-shot", "kernel-sgd", "ft-sgd", "ft-adam") if m in result["runs"]["pretrained"]["summary"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.38
    for i, (name, run) in enumerate(result["runs"].items()):
        xs = np.arange(len(methods)) + (i - 0.5) * width
        means = [run["summary"][m]["mean"] for m in methods]
        ax.bar(xs, means, width, label=name, alpha=0.8)
        for x, m in zip(xs, methods):
            ax.plot([x] * len(run["per_seed"][m]), run["per_seed"][m], "k.", ms=4)
    ax.axhline(0.5, color="gray", ls=":", label="chance")
    ax.axhline(GOAL, color="tab:red", ls="--", lw=1, label=f"goal {GOAL:.2f}")
    ax.set_xticks(np.arange(len(methods)), methods)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.3, 1.0)
    ax.set_title(f"SST-2, k={result['k']}: {Path(result['model']).name} vs its random initialisation", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    report.cli("miniberta", __doc__,
               {"model": "miniberta-small", "data_dir": "../shared/data", "k": 16, "seeds": "13,21,42,87,100",
                "optimizers": "", "steps": 1000, "eval_every": 100, "text": "raw", "out": "runs/miniberta"},
               compute, rows, figure)

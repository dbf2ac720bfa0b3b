"""The same model computed another way (``LoadedMaskedLM.variant``): its layers as one scan, and
bfloat16 compute on float32 parameters (mixed-precision fine-tuning)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_lab import finetune
from ntk_lab.models.encoder import MaskedLM

BF16_ROUNDOFF = 2.0**-8  # bfloat16's unit roundoff (8 significand bits)


@pytest.fixture(autouse=True)
def float32_matmuls():
    """The claims are against float32: on a GPU, whose default matmul precision is TF32, they would
    compare two TF32 roundings instead."""
    with jax.default_matmul_precision("float32"):
        yield


@pytest.fixture(scope="module")
def setup(tiny):
    from ntk_lab.prompts import PromptedClassifier, encode, inputs
    from ntk_lab.tasks import get_task, kshot_split, load_task_data

    task = get_task("sst2")
    train, test = load_task_data(task, "sample")
    split = kshot_split(train, test, 2, 16, 13)
    enc = [encode(task, part, tiny.tokenizer, 64) for part in (split.train, split.dev)]
    return PromptedClassifier.for_task(tiny, task), [inputs(e) for e in enc], [e["labels"] for e in enc]


def _relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_scanned_layers_are_the_same_function(tiny, setup) -> None:
    """One ``jax.lax.scan`` over the stacked layers: the program holds a scan and one layer's body, the
    parameter tree is unchanged, and the hidden states (with both adapters that act per layer) and
    the classifier's gradient equal the unrolled model's to float32 rounding."""
    f, (x_all, _), _ = setup
    x_train = {key: value[:8] for key, value in x_all.items()}
    scanned = dataclasses.replace(f, model=tiny.variant(scan=True))
    program = lambda g: jax.make_jaxpr(lambda p: g(p, x_train))(tiny.params).pretty_print()
    assert program(scanned).count("scan[") == 1 and program(f).count("scan[") == 0
    init = lambda scan: MaskedLM(tiny.config, scan=scan).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32),
                                                              jnp.ones((1, 4), jnp.int32))["params"]
    assert jax.tree_util.tree_structure(init(True)) == jax.tree_util.tree_structure(tiny.params)

    layers, width = tiny.config.num_hidden_layers, tiny.config.hidden_size
    ids, mask = x_train["input_ids"][:4], x_train["attention_mask"][:4]
    normal = lambda i, shape: jax.random.normal(jax.random.PRNGKey(i), shape)
    special = jnp.stack([ids == tiny.tokenizer.cls_token_id, ids == tiny.tokenizer.sep_token_id], axis=-1)
    for adapters in (None, {"deep_prompt": normal(1, (layers, 3, width)), "pasta": normal(2, (layers, 2, width)),
                            "special": special}):
        hidden = [jax.jit(model.encode)(tiny.params, ids, mask, None, adapters) for model in (tiny, tiny.variant(scan=True))]
        assert _relative(hidden[1], hidden[0]) < 1e-6

    grad = lambda g: np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(
        jax.jit(jax.grad(lambda p: jnp.sum(g(p, x_train) ** 2)))(tiny.params))])
    assert _relative(grad(scanned), grad(f)) < 1e-5


def test_bfloat16_variant_computes_in_bfloat16_on_float32_parameters(tiny, setup) -> None:
    """The bfloat16 variant's logits differ from float32's by bfloat16 rounding: more than float32's
    (so the compute is really bfloat16), at most a few units of bfloat16's roundoff 2^-8."""
    f, (x_train, _), _ = setup
    low = dataclasses.replace(f, model=tiny.variant(jnp.bfloat16))
    error = _relative(low(tiny.params, x_train), f(tiny.params, x_train))
    assert 2.0**-14 < error < 8 * BF16_ROUNDOFF, error


def test_mixed_precision_fine_tuning_tracks_float32(tiny, setup) -> None:
    """SGD whose gradients come from the bfloat16 variant (``step_f``): the parameters stay float32, the
    first update equals float32's up to bfloat16 rounding of the gradient (relative error above
    float32's, under 8·2^-8), and after 30 steps the distance travelled is float32's within 3%."""
    f, (x_train, x_dev), (y_train, y_dev) = setup
    low = dataclasses.replace(f, model=tiny.variant(jnp.bfloat16))

    def moved(steps: int, step_f) -> np.ndarray:
        result = finetune.train(f, tiny.params, x_train, y_train, x_dev, y_dev, optimizer="sgd", lrs=(1e-2,),
                                steps=steps, eval_every=steps, keep="last", step_f=step_f)
        assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(result.params)} == {jnp.dtype(jnp.float32)}
        return np.concatenate([np.ravel(np.asarray(a) - np.asarray(b)) for a, b in
                               zip(jax.tree_util.tree_leaves(result.params), jax.tree_util.tree_leaves(tiny.params))])

    first = _relative(moved(1, low), moved(1, None))
    assert 2.0**-14 < first < 8 * BF16_ROUNDOFF, first
    assert _relative(moved(30, low), moved(30, None)) < 0.03

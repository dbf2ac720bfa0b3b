"""Masked-LM pretraining (ntk_lab.pretrain): masking statistics, learning, resume, the saved folder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_lab.errors import NtkLabError
from ntk_lab.pretrain import (
    MASK,
    SPECIAL_TOKENS,
    PretrainConfig,
    label_words,
    main,
    mask_tokens,
    pretrain,
)
from ntk_lab.sample import sentences


def _bound(n: int, p: float, sigmas: float = 5.0) -> float:
    """``sigmas`` binomial standard deviations of a proportion out of ``n`` at rate ``p``."""
    return sigmas * np.sqrt(p * (1 - p) / n)


def test_masking_is_15_percent_then_80_10_10_within_binomial_bounds():
    vocab = 50_000
    rng = np.random.default_rng(0)
    ids = rng.integers(len(SPECIAL_TOKENS), vocab, (256, 128)).astype(np.int32)
    ids[:, 0], ids[:, -1], ids[::7, 60] = 0, 2, 4  # special tokens are never chosen
    inputs, positions, targets, weights = map(np.asarray, mask_tokens(jax.random.PRNGKey(0), jnp.asarray(ids), 0.15, 64, vocab))
    rows = np.arange(len(ids))[:, None]
    chosen = np.zeros(ids.shape, bool)
    chosen[np.broadcast_to(rows, positions.shape)[weights > 0], positions[weights > 0]] = True
    eligible = ids >= len(SPECIAL_TOKENS)
    assert not chosen[~eligible].any()
    rate = chosen.sum() / eligible.sum()
    assert abs(rate - 0.15) < _bound(eligible.sum(), 0.15)
    np.testing.assert_array_equal(np.take_along_axis(ids, positions, 1), targets)  # targets are the originals
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])  # unchosen tokens are untouched
    n = chosen.sum()
    masked = (inputs[chosen] == MASK).mean()
    kept = (inputs[chosen] == ids[chosen]).mean()
    swapped = 1 - masked - kept
    assert abs(masked - 0.8) < _bound(n, 0.8)
    assert abs(kept - (0.1 + 0.1 / vocab)) < _bound(n, 0.1)  # a random token equals the original at rate 1/V
    assert abs(swapped - 0.1) < _bound(n, 0.1)
    assert (inputs[chosen & (inputs != MASK)] >= len(SPECIAL_TOKENS)).all()  # random tokens are never special


def test_masking_caps_the_chosen_positions_per_row():
    ids = jnp.full((4, 40), 100, jnp.int32)
    inputs, positions, _, weights = mask_tokens(jax.random.PRNGKey(1), ids, 0.9, 5, 200)
    assert positions.shape == (4, 5) and float(weights.sum()) == 20
    assert int((np.asarray(inputs) != 100).sum()) <= 20  # no token is altered beyond the kept positions


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A corpus the test writes: 3000 sentences of the offline sample's grammar, one a line."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(s for s, _ in sentences(3000, seed=5)) + "\n", encoding="utf-8")
    return path


def _config(corpus: Path, **changes) -> PretrainConfig:
    base = PretrainConfig(corpus=(str(corpus),), config="tiny", tokens=16 * 32 * 80, vocab_size=1000, seq_len=32,
                          batch_size=16, lr=3e-3, val_sequences=16, tokenizer_chars=10**6, precision="float32")
    return replace(base, **changes)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pretrain")
    summary = pretrain(_config(corpus), out, eval_every=20, checkpoint_every=30, progress=lambda line: None)
    return out, summary


def test_loss_falls_on_a_small_corpus(trained):
    _, summary = trained
    evals = [e for e in summary["log"] if "val_loss" in e]
    assert summary["steps_done"] == 80 and len(evals) == 4
    # at initialisation the loss is near log(V), a uniform guess (6.3 nats for this corpus' BPE)
    losses = [e["val_loss"] for e in evals]
    assert losses[-1] < np.log(summary["vocab_size"]) - 2.0
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert evals[-1]["val_accuracy"] > 0.1


def test_each_evaluation_logs_the_attention_to_the_previous_token(trained):
    """``val_previous_attention`` of the last evaluation is the exported model's mean attention to the
    previous token on the first 16 held-out rows (``ntk_lab.attention``), recomputed here to 1e-5."""
    from ntk_lab.attention import attention_maps, offset_attention
    from ntk_lab.models import load_masked_lm

    out, summary = trained
    evals = [e for e in summary["log"] if "val_loss" in e]
    assert all(0.0 < e["val_previous_attention"] < 1.0 for e in evals)
    model = load_masked_lm(str(out / "model"))
    rows = np.load(out / "rows.npy")[:16]
    mask = np.ones_like(rows)
    with jax.default_matmul_precision("float32"):
        expected = offset_attention(attention_maps(model.module, model.params, rows, mask), mask, -1).mean()
    assert evals[-1]["val_previous_attention"] == pytest.approx(float(expected), abs=1e-5)


def test_every_label_word_is_one_token(trained):
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import label_word_ids
    from ntk_lab.tasks import TASKS

    model = load_masked_lm(str(trained[0] / "model"))
    for task in TASKS.values():
        ids = label_word_ids(task, model.tokenizer)  # raises unless each word is one token
        assert len(set(ids.tolist())) == task.num_classes


def test_saved_folder_loads_in_flax_and_torch_with_equal_logits(trained):
    torch = pytest.importorskip("torch")
    from transformers import RobertaForMaskedLM

    from ntk_lab.models import load_masked_lm

    folder = trained[0] / "model"
    flax_model = load_masked_lm(str(folder))
    torch_model = RobertaForMaskedLM.from_pretrained(folder, dtype=torch.float32).eval()
    batch = flax_model.tokenizer(["the film was dull .", "It was <mask>.", "the cast is truly superb from start to finish ."],
                                 padding=True, return_tensors="np")
    with jax.default_matmul_precision("float32"):  # parity is a float32 claim (a GPU defaults to TF32)
        ours = np.asarray(flax_model.apply(flax_model.params, jnp.asarray(batch["input_ids"]),
                                           jnp.asarray(batch["attention_mask"])))
    with torch.no_grad():
        theirs = torch_model(input_ids=torch.as_tensor(batch["input_ids"]),
                             attention_mask=torch.as_tensor(batch["attention_mask"])).logits.numpy()
    real = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=0)
    assert np.abs(theirs[real]).max() > 1.0  # trained logits, not a near-zero head


def test_resume_gives_identical_parameters(corpus, tmp_path):
    from safetensors.numpy import load_file

    config = _config(corpus, tokens=16 * 32 * 6)
    straight = tmp_path / "straight"
    pretrain(config, straight, eval_every=3, checkpoint_every=100, progress=lambda line: None)
    stopped = tmp_path / "stopped"
    first = pretrain(config, stopped, eval_every=3, checkpoint_every=2, stop_after=3, progress=lambda line: None)
    assert first["steps_done"] == 3 and "model" not in first
    lines = []
    second = pretrain(config, stopped, eval_every=3, checkpoint_every=2, progress=lines.append)
    assert second["steps_done"] == 6 and any(line.startswith("resumed at step 3") for line in lines)
    a, b = load_file(straight / "model" / "model.safetensors"), load_file(stopped / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    logged = json.loads((stopped / "pretrain.json").read_text())["log"]
    assert [e["step"] for e in logged if "val_loss" in e] == [3, 6]


def test_resume_with_other_settings_is_one_clear_error(corpus, tmp_path):
    config = _config(corpus, tokens=16 * 32 * 2)
    pretrain(config, tmp_path, progress=lambda line: None, stop_after=1)
    with pytest.raises(NtkLabError, match=r"other settings \(lr\).*--restart"):
        pretrain(replace(config, lr=1e-4), tmp_path, progress=lambda line: None)
    (tmp_path / "checkpoint.msgpack").write_bytes(b"not a checkpoint")
    with pytest.raises(NtkLabError, match="damaged"):
        pretrain(config, tmp_path, progress=lambda line: None)


def test_bad_inputs_are_one_line(corpus, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    cases = {
        "does not exist": ["--corpus", str(tmp_path / "missing.txt")],
        "has no text": ["--corpus", str(empty)],
        "cannot hold": ["--corpus", str(corpus), "--vocab-size", "300"],
        "unknown|invalid choice": ["--corpus", str(corpus), "--config", "huge"],
        "is a file": ["--corpus", str(corpus), "--out", str(empty)],
        "--max-seconds must be": ["--corpus", str(corpus), "--max-seconds", "-1"],
    }
    for i, (expected, argv) in enumerate(cases.items()):
        argv = argv if "--out" in argv else [*argv, "--out", str(tmp_path / f"out{i}")]
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--config", "tiny", "--tokens", "1000"] if "--config" not in argv else [*argv, "--tokens", "1000"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) <= 2 and "Traceback" not in err
        assert any(word in err for word in expected.split("|")), (expected, err)


def test_vocabulary_too_small_for_the_label_words_is_named(corpus):
    from ntk_lab.pretrain import train_tokenizer

    lines = corpus.read_text().splitlines()[:200]
    with pytest.raises(NtkLabError, match="raise --vocab-size|use at least"):
        train_tokenizer(lines, 300, label_words())


def test_step_flops_matches_xla_cost_analysis():
    """Our FLOP count of a training step against XLA's own count of the compiled forward pass x 3."""
    from ntk_lab.models.encoder import EncoderConfig, MaskedLM
    from ntk_lab.pretrain import hf_config, mlm_loss, step_flops

    config = PretrainConfig(corpus=("unused",), config="tiny", vocab_size=700, seq_len=64, batch_size=4,
                            architecture={"hidden_size": 64, "intermediate_size": 256})
    module = MaskedLM(EncoderConfig.from_hf(hf_config(config, 700)))
    ids = jnp.zeros((4, 64), jnp.int32)
    params = module.init(jax.random.PRNGKey(0), ids[:, :2], jnp.ones_like(ids[:, :2]))["params"]
    m = config.max_masked
    positions, targets, weights = jnp.zeros((4, m), jnp.int32), jnp.zeros((4, m), jnp.int32), jnp.ones((4, m))
    forward = jax.jit(lambda p: mlm_loss(module, p, ids, positions, targets, weights)[0])
    cost = forward.lower(params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    # XLA also counts the elementwise work (softmax, GELU, LayerNorm): ours, matmuls only, is a little less
    assert 0.8 < step_flops(config, 700) / (3 * cost["flops"]) <= 1.0


def test_bfloat16_compute_keeps_float32_master_weights(corpus, tmp_path):
    """The GPU recipe (bf16 compute, float32 master weights) runs here too; its loss tracks float32's."""
    from ntk_lab.pretrain import Trainer

    config = _config(corpus, precision="bfloat16")
    rows = np.random.default_rng(0).integers(5, 600, (16, 32)).astype(np.int32)
    losses = {}
    for precision in ("float32", "bfloat16"):
        trainer = Trainer(replace(config, precision=precision), 600, rows)
        params, opt_state = trainer.init()
        params, opt_state, loss, _ = trainer.step(params, opt_state, jnp.asarray(rows), trainer.step_key(0))
        assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
        losses[precision] = float(loss)
    # at initialisation the loss is log(600) = 6.4 nats; bf16 has 8 bits of mantissa (relative 4e-3)
    assert abs(losses["bfloat16"] - losses["float32"]) < 0.05


def test_bfloat16_step_accumulates_every_scatter_in_float32(corpus):
    """A bfloat16 step's scatter-adds (the embedding lookups' and the masked positions' gradients) run in
    float32: XLA's GPU backend serialises bfloat16 scatter-adds that hit one row many times (the medium
    config's step: 66 ms against 2.1 ms on an H200). Read off the step's lowered program, whose scatter
    bodies name their element type; the embedding tables stay float32 and the rest is cast."""
    import re

    from ntk_lab.pretrain import Trainer, compute_params

    config = _config(corpus, precision="bfloat16")
    rows = np.random.default_rng(0).integers(5, 600, (16, 32)).astype(np.int32)
    trainer = Trainer(config, 600, rows)
    params, opt_state = trainer.init()
    text = trainer.step.lower(params, opt_state, jnp.asarray(rows), trainer.step_key(0)).as_text()
    bodies = re.findall(r'"stablehlo\.scatter".*?\^bb0\(([^)]*)\)', text, flags=re.S)
    kinds = {re.findall(r"tensor<(\w+)>", body)[0] for body in bodies}
    assert len(bodies) >= 4 and "bf16" not in kinds and "f32" in kinds, kinds
    cast = compute_params(params, jnp.bfloat16)
    tables = {k: v.dtype for k, v in cast["embeddings"].items() if k.endswith("_embeddings")}
    assert set(tables) == {"word_embeddings", "position_embeddings", "token_type_embeddings"}
    assert set(tables.values()) == {jnp.dtype(jnp.float32)}
    assert cast["embeddings"]["LayerNorm"]["scale"].dtype == jnp.bfloat16


def test_init_from_continues_a_checkpoint_and_checks_its_architecture(trained, corpus, tmp_path):
    out, summary = trained
    trained_loss = summary["final"]["val_loss"]
    config = _config(corpus, tokens=16 * 32 * 2, lr=1e-5, init_from=str(out / "model"))
    more = pretrain(config, tmp_path / "more", eval_every=1, progress=lambda line: None)
    # the same validation rows and masks: continuing from the trained weights starts where they ended
    assert abs(more["log"][0]["val_loss"] - trained_loss) < 0.05 < np.log(more["vocab_size"]) - trained_loss
    assert more["vocab_size"] == summary["vocab_size"]
    with pytest.raises(NtkLabError, match="another architecture .*hidden_size 32 vs 64"):
        pretrain(replace(config, architecture={"hidden_size": 64}), tmp_path / "other", progress=lambda line: None)
    with pytest.raises(NtkLabError, match="34 positions, more than --seq-len 24 uses .*--seq-len 32"):
        pretrain(replace(config, seq_len=24), tmp_path / "shorter", progress=lambda line: None)


def test_init_from_shorter_rows_extends_the_position_table(trained, corpus):
    """A model pretrained on rows of 32 tokens continued on rows of 48: every weight is the
    checkpoint's, and the position table's first 34 rows too; rows 34..49 are the run's own
    initialisation."""
    from safetensors.numpy import load_file

    from ntk_lab.pretrain import Trainer, initial_weights

    out, summary = trained
    config = _config(corpus, seq_len=48, init_from=str(out / "model"))
    trainer = Trainer(config, summary["vocab_size"], np.zeros((2, 48), np.int32))
    fresh, _ = trainer.init()
    params = initial_weights(config, trainer, fresh)
    table = np.asarray(params["embeddings"]["position_embeddings"])
    saved = load_file(out / "model" / "model.safetensors")
    assert table.shape == (50, 32) and trainer.hf.max_position_embeddings == 50
    np.testing.assert_array_equal(table[:34], saved["roberta.embeddings.position_embeddings.weight"])
    np.testing.assert_array_equal(table[34:], np.asarray(fresh["embeddings"]["position_embeddings"])[34:])
    np.testing.assert_array_equal(np.asarray(params["embeddings"]["word_embeddings"]),
                                  saved["roberta.embeddings.word_embeddings.weight"])


def test_max_seconds_stops_checkpoints_and_exports_the_weights_so_far(corpus, tmp_path):
    """``max_seconds=0``: one step, then the state is checkpointed and the weights exported to
    ``model-step1`` (they load, and equal the checkpoint's); the same run without the limit resumes
    from step 1 to the end."""
    from ntk_lab.models import load_masked_lm
    from ntk_lab.pretrain import Trainer, load_checkpoint

    config = _config(corpus, tokens=16 * 32 * 4)
    lines = []
    first = pretrain(config, tmp_path / "run", eval_every=2, checkpoint_every=100, max_seconds=0, progress=lines.append)
    assert first["steps_done"] == 1 and first["model"] == str(tmp_path / "run" / "model-step1")
    assert first["final"]["step"] == 1 and np.isfinite(first["final"]["val_loss"])  # measured at the stop
    assert any(line.startswith("stopped at step 1 of 4") for line in lines)
    exported = load_masked_lm(first["model"])
    trainer = Trainer(config, len(exported.tokenizer), np.zeros((1, config.seq_len), np.int32))
    step, params, _, _, _ = load_checkpoint(tmp_path / "run", *trainer.init())
    assert step == 1
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(exported.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    second = pretrain(config, tmp_path / "run", eval_every=2, checkpoint_every=100, progress=lines.append)
    assert second["steps_done"] == 4 and any(line.startswith("resumed at step 1") for line in lines)
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()  # resuming is exact: test_resume_gives_...


def test_a_diverging_loss_is_one_clear_line(corpus, tmp_path):
    """The loss stays on the device between log lines; a run whose loss overflows stops at the next log
    line with one line saying so and what to change (here a learning rate of 10^30)."""
    config = _config(corpus, tokens=16 * 32 * 8, lr=1e30, warmup=0.0)
    with pytest.raises(NtkLabError, match=r"the training loss became (nan|inf) by step [1-8]: lower --lr"):
        pretrain(config, tmp_path / "run", log_every=4, progress=lambda line: None)

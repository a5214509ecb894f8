"""Golden numbers for chapter 7 (IMDB sentiment with a Trainer), for tests/trainer.rs.

Runs transformers' `Trainer` on `GPT2ForSequenceClassification` loaded from the crate's bundled
tiny GPT-2 (data/tiny-gpt2, an LM checkpoint, so `from_pretrained(..., num_labels=2)` creates a
new `score` weight, drawn here under a fixed torch seed and recorded so that the Rust side can set
it), with the GPT-2 tokenizer (data/gpt2-tokenizer/tokenizer.json through
`PreTrainedTokenizerFast`, pad token = eos token = "<|endoftext|>" = 50256, and
`model.config.pad_token_id = 50256` as the tutorial does), on the bundled IMDB sample
(data/imdb-sample, written by make_imdb_sample.py): the first 32 rows of train.parquet in file
order, 2 optimizer steps of 16, and `evaluate()` on the first 64 rows of test.parquet. It writes
tests/fixtures/trainer.json:

- `settings`: the TrainingArguments (the tutorial's, except learning_rate 1e-3 instead of 2e-5 so
  that two steps visibly move the weights, and the sizes), the optimizer transformers built
  (`args.optim` is "adamw_torch_fused" on torch >= 2.8) and the schedule;
- `model`: what `from_pretrained` reported, the initial `score.weight` (2 x 64), parameter counts;
- `decay_groups`: the parameter names the optimizer's weight-decay group holds and those of its
  no-decay group;
- `runs.max_length` (every row padded to 64 tokens, the tutorial's `padding="max_length"`) and
  `runs.longest` (DataCollatorWithPadding: every batch padded to its longest row): the batches,
  the logged loss, learning rate and grad norm of every step, `train()`'s TrainOutput,
  `total_flos` taken apart, parameter probes after each step, `evaluate()` with accuracy and the
  eval logits, and the trained model's `get_sentiment` logits;
- `checks`: the same max_length run with `optim="adamw_torch"` (not fused) and with
  `train_sampling_strategy="sequential"` instead of the sampler override, as differences;
- `tutorial_flops`: `total_flos` for gpt2 with 2 labels on the tutorial's 25,000 rows x 3 epochs
  x 1,024 tokens, from a random-init GPT2ForSequenceClassification's `num_parameters`.

It also writes tests/fixtures/trainer_f16.json (alone with --half-only), for tests/trainer.rs and
tests/train_parts.rs: the tutorial's `model.half()` trained by the Trainer as it is -
- `trainer`: the max_length run again on the half model with optim="adamw_torch": each step's loss
  and grad norm (step 2's are NaN), AdamW's state dtypes, and after step 1 how many of each
  parameter's values are NaN, +inf, -inf or finite (and moved), with the gradient's zeros and the
  moments' zeros behind them;
- `adamw`: torch.optim.AdamW on one f16 parameter of 96 values, two steps, gradients from 0 to 1:
  the raw f16 bits in and out (foreach and single-tensor agree), for a bit-for-bit check.

Dataloader shuffling is off: the Rust side cannot reproduce torch's RandomSampler, so the Trainer
subclass below returns a SequentialSampler from `_get_train_sampler(self, train_dataset=None)`.

Run from the repository root:  python scripts/reference/make_trainer_fixtures.py [--half-only]
"""

import argparse
import hashlib
import math
import pathlib
import tempfile

import accelerate
import pyarrow
import pyarrow.parquet as pq
import tokenizers
import torch
import transformers
from torch.utils.data import SequentialSampler
from transformers import (
    DataCollatorWithPadding,
    GPT2Config,
    GPT2ForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from reference_common import (
    ListDataset,
    compute_metrics,
    dumps,
    encode,
    pad_eos_tokenizer,
    probe,
    provenance,
)

FORMAT_VERSION = 1
COMMAND = "python scripts/reference/make_trainer_fixtures.py"
EOS = 50256
NUM_LABELS = 2
SCORE_SEED = 1234  # torch.manual_seed before from_pretrained draws the new score weight
TRAIN_ROWS = 32
EVAL_ROWS = 64
MAX_LENGTH = 64
PROBES = [
    "score.weight",
    "transformer.wte.weight",
    "transformer.h.0.attn.c_attn.weight",
    "transformer.h.1.ln_2.weight",
    "transformer.ln_f.bias",
]
SENTENCES = ["I hate this movie!", "I love this movie!"]
TRAINING_ARGS = {
    "learning_rate": 1e-3,  # the tutorial's is 2e-5; 1e-3 so that two steps visibly move the weights
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "num_train_epochs": 1,  # 32 rows / 16 = 2 optimizer steps (the tutorial's: 3)
    "weight_decay": 0.01,
    "seed": 42,
    "logging_steps": 1,
    "report_to": [],
    "eval_strategy": "no",  # evaluate() is called once, after training
    "save_strategy": "no",
    "use_cpu": True,
    # False, as the tutorial's notebook had it (the default is None: True when transformers' log level is
    # above WARNING). With True, the PrinterCallback that replaces the progress bar pops "total_flos"
    # out of the very dict train() returns as its metrics.
    "disable_tqdm": False,
}
# The tutorial: 25,000 IMDB training rows, 3 epochs, every row padded to 1,024 tokens, batch 16.
TUTORIAL = {"rows": 25000, "epochs": 3, "tokens_per_row": 1024, "batch_size": 16}


class SequentialTrainer(Trainer):
    """The Trainer with dataloader shuffling off, recording every training batch it feeds."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen_batches = []

    def _get_train_sampler(self, train_dataset=None):
        if train_dataset is None:
            train_dataset = self.train_dataset
        return SequentialSampler(train_dataset)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.seen_batches.append({
            "input_ids_shape": list(inputs["input_ids"].shape),
            "labels": inputs["labels"].tolist(),
            "input_ids": inputs["input_ids"].clone(),
            "num_items_in_batch": None if num_items_in_batch is None else int(num_items_in_batch),
        })
        return super().training_step(model, inputs, num_items_in_batch)


class RecordingTrainer(Trainer):
    """The plain Trainer (used with train_sampling_strategy="sequential"), for the check."""


class ProbeCallback(TrainerCallback):
    def __init__(self):
        self.probes = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.probes[f"after_step_{state.global_step}"] = probe(model, PROBES)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_model(root):
    torch.manual_seed(SCORE_SEED)
    model, info = GPT2ForSequenceClassification.from_pretrained(
        root / "data/tiny-gpt2",
        num_labels=NUM_LABELS,
        attn_implementation="eager",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        dtype=torch.float32,
        output_loading_info=True,
    )
    model.config.pad_token_id = EOS
    report = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys")}
    return model, report


def read_split(root, name, n):
    table = pq.read_table(root / f"data/imdb-sample/{name}.parquet")
    return table.column("text").to_pylist()[:n], table.column("label").to_pylist()[:n]


def make_trainer(root, tok, padding, train_rows, optim=None, override_sampler=True, tmp=None, extra=None):
    model, report = load_model(root)
    kwargs = dict(TRAINING_ARGS) | (extra or {})
    if optim is not None:
        kwargs["optim"] = optim
    if not override_sampler:
        kwargs["train_sampling_strategy"] = "sequential"
    args = TrainingArguments(output_dir=tmp, **kwargs)
    collator = default_data_collator if padding == "max_length" else DataCollatorWithPadding(tok)
    probes = ProbeCallback()
    cls = SequentialTrainer if override_sampler else RecordingTrainer
    trainer = cls(
        model=model,
        args=args,
        train_dataset=ListDataset(train_rows),
        processing_class=tok,
        data_collator=collator,
        compute_metrics=compute_metrics,
        callbacks=[probes],
    )
    return trainer, model, report, probes


def initial_loss(root, rows, collator):
    """The loss of the first batch under the initial weights, computed outside the Trainer."""
    model, _ = load_model(root)
    batch = collator(rows[:TRAINING_ARGS["per_device_train_batch_size"]])
    with torch.no_grad():
        return model(**batch).loss.item()


def decay_groups(trainer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for g in trainer.optimizer.param_groups:
        groups.append({"weight_decay": g["weight_decay"], "names": [names[id(p)] for p in g["params"]]})
    return groups


def optimizer_record(trainer):
    opt = trainer.optimizer
    inner = getattr(opt, "optimizer", opt)
    d = inner.defaults
    return {
        "args.optim": str(trainer.args.optim.value if hasattr(trainer.args.optim, "value") else trainer.args.optim),
        "class": f"{type(inner).__module__}.{type(inner).__name__}",
        "wrapped_in": f"{type(opt).__module__}.{type(opt).__name__}",
        "lr": d["lr"],
        "betas": list(d["betas"]),
        "eps": d["eps"],
        "weight_decay_default": d["weight_decay"],
        "amsgrad": d.get("amsgrad"),
        "maximize": d.get("maximize"),
        "foreach": d.get("foreach"),
        "fused": d.get("fused"),
    }


def sentiments(model, tok):
    model.eval()
    out = []
    for text in SENTENCES:
        enc = tok(text, return_tensors="pt")
        padded = tok(text, return_tensors="pt", padding="max_length", max_length=MAX_LENGTH)
        with torch.no_grad():
            logits = model(**enc).logits[0]
            logits_padded = model(**padded).logits[0]
        label = int(logits.argmax())
        out.append({
            "text": text,
            "ids": enc["input_ids"][0].tolist(),
            "logits": logits.tolist(),
            "logits_padded_to_64": logits_padded.tolist(),
            "label": label,
            "sentiment": "positive" if label == 1 else "negative",
        })
    return out


def run(root, tok, padding, train, evals, tmp):
    train_rows = encode(tok, *train, padding, MAX_LENGTH)
    eval_rows = encode(tok, *evals, padding, MAX_LENGTH)
    trainer, model, report, probes = make_trainer(root, tok, padding, train_rows, tmp=tmp)
    initial = probe(model, PROBES)
    score_init = model.score.weight.detach().clone()
    nonemb = model.num_parameters(exclude_embeddings=True)

    result = trainer.train()
    groups = decay_groups(trainer, model)
    optimizer = optimizer_record(trainer)
    scheduler = type(trainer.lr_scheduler).__name__

    steps = [
        {k: e[k] for k in ("step", "loss", "learning_rate", "grad_norm", "epoch")}
        for e in trainer.state.log_history if "loss" in e
    ]
    # The batches went in file order.
    bs = TRAINING_ARGS["per_device_train_batch_size"]
    for i, b in enumerate(trainer.seen_batches):
        assert b["labels"] == train[1][i * bs:(i + 1) * bs], "the sampler must keep file order"
    batches = [
        {
            "rows": [i * bs, (i + 1) * bs],
            "input_ids_shape": b["input_ids_shape"],
            "input_ids_numel": int(b["input_ids"].numel()),
            "non_pad_tokens": int(sum(len(r["input_ids"]) - r["input_ids"].count(EOS) for r in train_rows[i * bs:(i + 1) * bs])),
            "num_items_in_batch": b["num_items_in_batch"],
            "labels": b["labels"],
        }
        for i, b in enumerate(trainer.seen_batches)
    ]
    flos = [6 * b["input_ids_numel"] * nonemb for b in batches]
    assert float(sum(flos)) == result.metrics["total_flos"], (flos, result.metrics["total_flos"])
    collator = default_data_collator if padding == "max_length" else DataCollatorWithPadding(tok)
    loss0 = initial_loss(root, train_rows, collator)

    timing = ("train_runtime", "train_samples_per_second", "train_steps_per_second")
    train_output = {
        "global_step": result.global_step,
        "training_loss": result.training_loss,
        "metrics": {k: v for k, v in result.metrics.items() if k not in timing},
        "metrics_keys": sorted(result.metrics),
        "note": "TrainOutput(global_step, training_loss, metrics). training_loss = the mean of the logged "
        "per-step losses. metrics also holds train_runtime, train_samples_per_second (rows x steps run / "
        "max_steps, over the runtime) and train_steps_per_second, left out here as they are timings.",
    }

    eval_metrics = trainer.evaluate(eval_dataset=ListDataset(eval_rows))
    pred = trainer.predict(ListDataset(eval_rows))
    eval_timing = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
    evaluation = {
        "rows": [0, EVAL_ROWS],
        "labels": evals[1],
        "ids": [r["input_ids"] for r in encode(tok, *evals, "longest", MAX_LENGTH)],
        "metrics": {k: v for k, v in eval_metrics.items() if k not in eval_timing},
        "metrics_keys": sorted(eval_metrics),
        "logits": pred.predictions.tolist(),
        "predictions": pred.predictions.argmax(-1).tolist(),
        "note": "trainer.evaluate(eval_dataset) with compute_metrics = accuracy of argmax(logits) "
        "(eval_accuracy); eval_loss = mean cross-entropy over the rows (one batch of 64). logits are the "
        "pooled logits of every row (trainer.predict, same batches), ids the unpadded token ids. "
        "eval_runtime, eval_samples_per_second and eval_steps_per_second are timings, left out.",
    }
    assert abs(pred.metrics["test_loss"] - eval_metrics["eval_loss"]) < 1e-7

    return {
        "padding": padding,
        "collator": "default_data_collator (rows already padded to 64)" if padding == "max_length"
        else "DataCollatorWithPadding(tokenizer): right-padded with 50256 to the batch's longest row",
        "train_ids": [r["input_ids"] for r in encode(tok, *train, "longest", MAX_LENGTH)],
        "train_labels": train[1],
        "batches": batches,
        "initial_loss_first_batch": loss0,
        "steps": steps,
        "train_output": train_output,
        "flos": {
            "num_parameters_exclude_embeddings": nonemb,
            "per_step": flos,
            "total_flos": result.metrics["total_flos"],
            "note": "Trainer.floating_point_ops(inputs) = 6 * inputs['input_ids'].numel() * "
            "model.num_parameters(exclude_embeddings=True), summed over every training batch (evaluate() adds "
            "nothing). numel counts the pad tokens: it is batch x padded length, not non_pad_tokens. "
            "exclude_embeddings drops every nn.Embedding's weight (wte, wpe) and keeps score.weight.",
        },
        "probes": {"initial": initial, **probes.probes},
        "eval": evaluation,
        "sentiments": sentiments(model, tok),
        "_score_init": score_init,
        "_report": report,
        "_groups": groups,
        "_optimizer": optimizer,
        "_scheduler": scheduler,
        "_args": trainer.args,
        "_model": model,
    }


def max_diff(a, b):
    """Largest absolute difference between two runs' losses and probe values."""
    d = 0.0
    for sa, sb in zip(a["steps"], b["steps"]):
        d = max(d, abs(sa["loss"] - sb["loss"]))
    for stage in a["probes"]:
        for name in PROBES:
            pa_, pb = a["probes"][stage][name], b["probes"][stage][name]
            for key in ("first", "strided"):
                d = max(d, max(abs(x - y) for x, y in zip(pa_[key], pb[key])))
    return d


def tutorial_flops():
    with torch.device("meta"):
        model = GPT2ForSequenceClassification(GPT2Config(num_labels=NUM_LABELS))
    total = model.num_parameters()
    nonemb = model.num_parameters(exclude_embeddings=True)
    params = dict(model.named_parameters())
    wte, wpe, score = (params[n].numel() for n in ("transformer.wte.weight", "transformer.wpe.weight", "score.weight"))
    tokens = TUTORIAL["rows"] * TUTORIAL["epochs"] * TUTORIAL["tokens_per_row"]
    flos = 6 * nonemb * tokens
    assert nonemb == 85_057_536 and total == 124_439_808 + 1_536 and flos == 39_194_512_588_800_000
    steps_per_epoch = math.ceil(TUTORIAL["rows"] / TUTORIAL["batch_size"])
    return {
        **TUTORIAL,
        "config": "GPT2ForSequenceClassification(GPT2Config(num_labels=2)) on the meta device (gpt2: n_embd 768, 12 layers, vocab 50257, n_positions 1024)",
        "num_parameters": total,
        "num_parameters_exclude_embeddings": nonemb,
        "wte": wte,
        "wpe": wpe,
        "score": score,
        "tokens": tokens,
        "total_flos": float(flos),
        "total_flos_int": flos,
        "steps_per_epoch": steps_per_epoch,
        "global_step": steps_per_epoch * TUTORIAL["epochs"],
        "note": "total_flos = 6 x num_parameters(exclude_embeddings=True) x tokens, tokens = rows x epochs x "
        "1,024 (every row padded to max_length). num_parameters = gpt2's 124,439,808 + score 2 x 768; "
        "excluding wte (50257 x 768) and wpe (1024 x 768) leaves 85,057,536, score included. global_step = "
        "ceil(25,000 / 16) x 3 (the last batch of each epoch holds 8 rows).",
    }


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=pathlib.Path, default=pathlib.Path("."))
    parser.add_argument("--half-only", action="store_true", help="write tests/fixtures/trainer_f16.json only")
    return parser.parse_args()


def main():
    opts = parse_args()
    root = opts.root
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    tok = pad_eos_tokenizer(root / "data/gpt2-tokenizer/tokenizer.json")
    train = read_split(root, "train", TRAIN_ROWS)
    evals = read_split(root, "test", EVAL_ROWS)
    write_half(root, tok, train)
    if opts.half_only:
        return

    with tempfile.TemporaryDirectory() as tmp:
        runs = {p: run(root, tok, p, train, evals, tmp) for p in ("max_length", "longest")}
        unfused = run_check(root, tok, train, evals, tmp, optim="adamw_torch")
        strategy = run_check(root, tok, train, evals, tmp, override_sampler=False, extra={"disable_tqdm": True})

    first = runs["max_length"]
    assert torch.equal(first["_score_init"], runs["longest"]["_score_init"])
    assert first["_groups"] == runs["longest"]["_groups"]
    targs = first["_args"]
    model = first["_model"]
    groups = first["_groups"]
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    # The optimizer's groups are exactly what get_decay_parameter_names says.
    decay_names = set(Trainer.get_decay_parameter_names(None, model))
    assert set(groups[0]["names"]) == decay_names

    params = dict(model.named_parameters())
    settings = {
        "training_arguments": {
            **{k: v for k, v in TRAINING_ARGS.items()},
            "output_dir": "(a temporary directory)",
        },
        "differs_from_tutorial": "learning_rate 1e-3 (the tutorial's 2e-5 moves a tiny model too little to "
        "see in two steps); num_train_epochs 1 on 32 rows (2 steps) instead of 3 on 25,000; max_length 64 "
        "instead of 1,024; float32 instead of .half(); dropout off; shuffling off; logging_steps 1.",
        "resolved": {
            "optim": first["_optimizer"]["args.optim"],
            "lr_scheduler_type": str(targs.lr_scheduler_type.value),
            "warmup_steps": targs.warmup_steps,
            "max_grad_norm": targs.max_grad_norm,
            "adam_beta1": targs.adam_beta1,
            "adam_beta2": targs.adam_beta2,
            "adam_epsilon": targs.adam_epsilon,
            "gradient_accumulation_steps": targs.gradient_accumulation_steps,
            "max_steps": targs.max_steps,
            "train_sampling_strategy": targs.train_sampling_strategy,
            "dataloader_drop_last": targs.dataloader_drop_last,
            "logging_nan_inf_filter": targs.logging_nan_inf_filter,
        },
        "optimizer": first["_optimizer"],
        "scheduler": first["_scheduler"] + ": linear from learning_rate to 0 over max_steps = 2, no warmup; "
        "the lr logged at step k is the one step k used (read after optimizer.step(), before "
        "lr_scheduler.step()): 1e-3, then 5e-4",
        "sampler": "SequentialTrainer overrides Trainer._get_train_sampler(self, train_dataset=None) to return "
        "SequentialSampler(train_dataset); the default is RandomSampler (train_sampling_strategy 'random'). "
        "transformers 5.24 also offers train_sampling_strategy='sequential', checked to give the same run.",
        "loss": "GPT2ForSequenceClassification's CrossEntropyLoss (mean over the batch) of the logits at each "
        "row's last non-pad token (the rightmost token != pad_token_id 50256). Its forward takes **kwargs, so "
        "the Trainer passes num_items_in_batch (the batch's label count) and does not divide the loss by "
        "gradient_accumulation_steps; the sequence-classification loss ignores num_items_in_batch. With "
        "gradient_accumulation_steps 1, as here, that changes nothing.",
        "clipping": "accelerator.clip_grad_norm_(model.parameters(), 1.0) before every optimizer step; "
        "grad_norm is the total L2 norm before clipping.",
    }

    fixture = {
        **provenance(FORMAT_VERSION, COMMAND),
        "accelerate": accelerate.__version__,
        "tokenizers": tokenizers.__version__,
        "pyarrow": pyarrow.__version__,
        "model_dir": "data/tiny-gpt2",
        "tokenizer": {
            "file": "data/gpt2-tokenizer/tokenizer.json",
            "class": "PreTrainedTokenizerFast(tokenizer_file=...)",
            "pad_token": tok.pad_token,
            "pad_token_id": tok.pad_token_id,
            "padding_side": tok.padding_side,
            "truncation": True,
            "max_length": MAX_LENGTH,
        },
        "data": {
            "train": "data/imdb-sample/train.parquet",
            "train_sha256": sha256(root / "data/imdb-sample/train.parquet"),
            "train_rows": [0, TRAIN_ROWS],
            "test": "data/imdb-sample/test.parquet",
            "test_sha256": sha256(root / "data/imdb-sample/test.parquet"),
            "test_rows": [0, EVAL_ROWS],
            "note": "the first rows of each file, in file order; the parquet files' own shuffling is the only one",
        },
        "settings": settings,
        "model": {
            "class": "GPT2ForSequenceClassification",
            "from_pretrained": "from_pretrained('data/tiny-gpt2', num_labels=2, attn_implementation='eager', "
            "resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, summary_first_dropout=0, dtype=float32) after "
            f"torch.manual_seed({SCORE_SEED}); then model.config.pad_token_id = 50256",
            "loading_report": first["_report"],
            "score_init": f"score.weight is new: nn.Linear(64, 2, bias=False) drawn from N(0, initializer_range "
            f"0.02) under torch.manual_seed({SCORE_SEED}); PyTorch's RNG stream cannot be reproduced in Rust, so "
            "the test sets initial_score_weight",
            "initial_score_weight": first["_score_init"].tolist(),
            "num_parameters": model.num_parameters(),
            "num_parameters_exclude_embeddings": model.num_parameters(exclude_embeddings=True),
            "wte": params["transformer.wte.weight"].numel(),
            "wpe": params["transformer.wpe.weight"].numel(),
            "score": params["score.weight"].numel(),
            "parameter_names": list(params),
        },
        "decay_groups": {
            "weight_decay_0.01": groups[0]["names"],
            "weight_decay_0": groups[1]["names"],
            "note": "trainer.optimizer.param_groups mapped back to names. Trainer.get_decay_parameter_names: "
            "every parameter except those of nn.LayerNorm modules and those whose name contains 'bias' (or "
            "'layernorm', 'rmsnorm', 'norm' as a name part). The embeddings wte and wpe DO get weight decay, "
            "and so does score.weight.",
        },
        "runs": {p: {k: v for k, v in r.items() if not k.startswith("_")} for p, r in runs.items()},
        "checks": {
            "adamw_torch_vs_fused_max_abs_diff": max_diff(first, unfused),
            "sequential_strategy_vs_override_max_abs_diff": max_diff(first, strategy),
            "disable_tqdm_train_metrics_keys": strategy["metrics_keys"],
            "note": "the max_length run again with optim='adamw_torch' (torch.optim.AdamW, foreach, not fused), "
            "and with train_sampling_strategy='sequential' instead of the _get_train_sampler override: the "
            "largest absolute difference in the step losses and the probe values (first, strided). The second "
            "check also ran with disable_tqdm=True: its train() metrics lack total_flos, because the "
            "PrinterCallback used instead of the progress bar pops it from the dict train() returns.",
        },
        "tutorial_flops": tutorial_flops(),
        "notes": {
            "probes": "taken initially (after from_pretrained and the pad_token_id assignment), and in "
            "on_step_end after each optimizer step: `first` = the first 8 values of the flattened tensor "
            "(Conv1D weights as [in, out], the checkpoint layout), `strided` = the values at 0, stride, ..., "
            "7*stride with stride = numel // 8, `sum_f64` = the float64 sum",
            "steps": "trainer.state.log_history with logging_steps=1: loss = the step's batch-mean loss (no "
            "rounding in transformers 5), grad_norm before clipping, learning_rate the step's lr, epoch = "
            "step / steps_per_epoch",
            "quality": f"after 2 steps on 32 rows ({sum(train[1])} positive) the model predicts "
            f"{sorted(set(first['eval']['predictions']))} for the 64 eval rows ({sum(evals[1])} positive), so "
            f"eval_accuracy {first['eval']['metrics']['eval_accuracy']} says nothing about learning; the fixture "
            "pins the arithmetic",
            "sentiments": "the trained model (eval mode) on each sentence alone (no padding, no special "
            "tokens), and padded on the right to 64 with 50256 (the same logits: pooling takes the last "
            "non-pad token); label = argmax, 1 = positive",
        },
    }
    out = root / "tests/fixtures/trainer.json"
    out.write_text(dumps(fixture), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


# ---------------------------------------------------------------------------------------------
# Half precision: the tutorial's `model.half()` trained by the Trainer as it is (`07 --dtype f16`)

HALF_COMMAND = "python scripts/reference/make_trainer_fixtures.py --half-only"
F16_TINY = 2.0 ** -24  # f16's smallest subnormal, 5.96e-8: eps 1e-8 rounds to 0


def f16_bits(t):
    """The raw bits of an f16 tensor, as integers (JSON holds no NaN or infinity)."""
    return t.detach().contiguous().view(torch.int16).to(torch.int32).bitwise_and(0xFFFF).reshape(-1).tolist()


def finite_or_name(x):
    return x if math.isfinite(x) else repr(float(x))


def census(before, after, grad, m, v):
    """What one step did to one parameter, element by element."""
    fin = torch.isfinite(after)
    return {
        "numel": after.numel(),
        "nan": int(torch.isnan(after).sum()),
        "pos_inf": int((after == float("inf")).sum()),
        "neg_inf": int((after == float("-inf")).sum()),
        "finite": int(fin.sum()),
        "finite_moved": int((fin & (after != before)).sum()),
        "grad_zero": int((grad == 0).sum()),
        "exp_avg_zero": int((m == 0).sum()),
        "exp_avg_sq_zero": int((v == 0).sum()),
        "exp_avg_sq_zero_grad_nonzero": int(((v == 0) & (grad != 0)).sum()),
    }


def adamw_in_f16():
    """torch.optim.AdamW on one f16 parameter, two steps, gradients chosen to cover every case:
    zero, below the size whose square (1 - beta2) * g^2 rounds to 0 in f16, and above it. The
    raw bits in and out, for a bit-for-bit check of the crate's AdamW."""
    n = 96
    idx = torch.arange(n, dtype=torch.float64)
    w0 = (0.02 * torch.sin(idx * 0.37)).to(torch.float16)
    mags = torch.tensor([0.0, 1e-7, 1e-5, 1e-4, 1e-3, 4e-3, 5e-3, 5.5e-3, 6e-3, 1e-2, 0.1, 1.0], dtype=torch.float64)
    g1 = (mags.repeat(n // len(mags)) * torch.where(idx % 2 == 0, 1.0, -1.0)).to(torch.float16)
    g2 = torch.roll(g1, 5)
    out = {}
    for foreach in (False, True):
        p = torch.nn.Parameter(w0.clone())
        opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, foreach=foreach)
        steps = []
        for g in (g1, g2):
            p.grad = g.clone()
            opt.step()
            st = opt.state[p]
            assert st["exp_avg"].dtype == torch.float16 and st["exp_avg_sq"].dtype == torch.float16
            steps.append({"w": f16_bits(p), "exp_avg": f16_bits(st["exp_avg"]), "exp_avg_sq": f16_bits(st["exp_avg_sq"])})
        out[foreach] = steps
    assert out[False] == out[True], "foreach and single-tensor AdamW differ in f16"
    return {
        "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
        "w0": f16_bits(w0), "grads": [f16_bits(g1), f16_bits(g2)],
        "steps": out[False],
        "note": "torch.optim.AdamW(foreach=False) on one float16 Parameter of 96 values, two steps with the "
        "gradients given (f16 bits); exp_avg and exp_avg_sq are float16 (zeros_like(param)). foreach=True "
        "gives the same bits. Every value is the raw IEEE half bit pattern as an unsigned 16-bit integer.",
    }


def half_run(root, tok, train, tmp):
    """The max_length run with the model in float16 (`model.half()`) and optim='adamw_torch': every step's
    loss and grad norm, and after step 1 what AdamW did to each parameter."""
    train_rows = encode(tok, *train, "max_length", MAX_LENGTH)
    model, _ = load_model(root)
    model = model.half()
    kwargs = dict(TRAINING_ARGS) | {"optim": "adamw_torch"}
    args = TrainingArguments(output_dir=tmp, **kwargs)
    trainer = SequentialTrainer(
        model=model, args=args, train_dataset=ListDataset(train_rows), processing_class=tok,
        data_collator=default_data_collator,
    )
    trainer.create_optimizer()
    inner = trainer.optimizer
    seen = {"before": [], "grads": [], "after": [], "losses": []}
    original_step = inner.step

    def step(*a, **k):
        # The gradients AdamW receives: after clipping.
        seen["before"].append({n: p.detach().clone() for n, p in model.named_parameters()})
        seen["grads"].append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
        out = original_step(*a, **k)
        seen["after"].append({n: p.detach().clone() for n, p in model.named_parameters()})
        return out

    inner.step = step
    original_compute_loss = trainer.compute_loss

    def compute_loss(model, inputs, *a, **k):
        out = original_compute_loss(model, inputs, *a, **k)
        loss = out[0] if isinstance(out, tuple) else out
        seen["losses"].append(float(loss.detach().float()))
        return out

    trainer.compute_loss = compute_loss
    initial = probe(model, PROBES)
    trainer.train()
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert type(opt) is torch.optim.AdamW and not opt.defaults.get("fused"), opt.defaults
    logged = [e for e in trainer.state.log_history if "loss" in e]
    params = dict(model.named_parameters())
    # The moments after step 1 cannot be read back after step 2; recompute them from the recorded
    # gradient with the same operations (checked against the weights below).
    per_param = {}
    totals = {}
    for name in params:
        before, g, after = seen["before"][0][name], seen["grads"][0][name], seen["after"][0][name]
        m = torch.zeros_like(before).lerp_(g, 0.1)
        v = torch.zeros_like(before).mul_(0.999).addcmul_(g, g, value=0.001)
        c = census(before, after, g, m, v)
        assert c["grad_zero"] <= c["exp_avg_zero"]
        per_param[name] = c
        for k, x in c.items():
            totals[k] = totals.get(k, 0) + x
    state_dtypes = sorted({str(opt.state[p][k].dtype) for p in params.values() for k in ("exp_avg", "exp_avg_sq")})
    probes_after_1 = probe_half(seen["after"][0])
    return {
        "training_arguments": {**kwargs, "output_dir": "(a temporary directory)"},
        "model": "load_model() as for the float32 runs (same score.weight), then model.half(): every parameter float16",
        "optimizer": {"class": f"{type(opt).__module__}.{type(opt).__name__}", "foreach": opt.defaults.get("foreach"),
                      "fused": opt.defaults.get("fused"), "eps": opt.defaults["eps"], "state_dtypes": state_dtypes},
        "steps": [
            {"step": e["step"], "logged_loss": finite_or_name(e["loss"]), "learning_rate": e["learning_rate"],
             "grad_norm": finite_or_name(float(e["grad_norm"])), "loss": finite_or_name(seen["losses"][i])}
            for i, e in enumerate(logged)
        ],
        "initial_probes": initial,
        "after_step_1": {"totals": totals, "per_parameter": per_param, "probes": probes_after_1},
        "note": "trainer.train() on the half model: loss = the step's batch loss as computed (float16 logits, "
        "the loss read as a float); logged_loss = what log_history shows (logging_nan_inf_filter replaces a "
        "NaN loss by the mean of the earlier ones in the logging window: 0.0 here); non-finite values are "
        "written as strings. after_step_1 takes each parameter as AdamW left it after the first step: how "
        "many values are NaN, +inf, -inf, finite, finite and moved; how many of the (clipped) gradient's "
        "values are 0, and of the moments exp_avg, exp_avg_sq after the step (recomputed from the gradient "
        "with the same operations). exp_avg_sq rounds to 0 in f16 when (1 - beta2) * g^2 < 2^-25; eps 1e-8 "
        "rounds to 0 when added to it, so denom = 0 and the update is exp_avg / 0: +-inf where the gradient "
        "is nonzero, NaN (0/0) where it is 0.",
    }


def probe_half(params):
    out = {}
    for name in PROBES:
        flat = params[name].reshape(-1)
        stride = flat.numel() // 8
        out[name] = {"stride": stride, "first": f16_bits(flat[:8]), "strided": f16_bits(flat[[i * stride for i in range(8)]])}
    return out


def write_half(root, tok, train):
    with tempfile.TemporaryDirectory() as tmp:
        run_ = half_run(root, tok, train, tmp)
    fixture = {
        **provenance(FORMAT_VERSION, HALF_COMMAND),
        "accelerate": accelerate.__version__,
        "f16_smallest_subnormal": F16_TINY,
        "eps_in_f16": float(torch.tensor(1e-8, dtype=torch.float16)),
        "trainer": run_,
        "adamw": adamw_in_f16(),
        "notes": {
            "probes": "as in trainer.json (first 8 values, 8 values at stride numel // 8), as f16 bits",
        },
    }
    out = root / "tests/fixtures/trainer_f16.json"
    out.write_text(dumps(fixture), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


def run_check(root, tok, train, evals, tmp, optim=None, override_sampler=True, extra=None):
    train_rows = encode(tok, *train, "max_length", MAX_LENGTH)
    trainer, model, _, probes = make_trainer(root, tok, "max_length", train_rows, optim=optim,
                                             override_sampler=override_sampler, tmp=tmp, extra=extra)
    initial = probe(model, PROBES)
    result = trainer.train()
    if not override_sampler:
        assert isinstance(trainer._get_train_sampler(), SequentialSampler)
    if optim is not None:
        inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        assert not inner.defaults.get("fused"), inner.defaults
    steps = [{k: e[k] for k in ("step", "loss")} for e in trainer.state.log_history if "loss" in e]
    return {"steps": steps, "probes": {"initial": initial, **probes.probes}, "metrics_keys": sorted(result.metrics)}


if __name__ == "__main__":
    main()

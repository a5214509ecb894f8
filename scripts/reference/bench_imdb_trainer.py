"""The chapter 7 benchmark against transformers: the reference side.

Times Hugging Face transformers' `Trainer` fine-tuning `GPT2ForSequenceClassification` on IMDB
(float32, CPU), the work `examples/07_imdb_finetune.rs` does with the crate's `Trainer`, and
prints one JSON line of figures on stdout (everything else goes to stderr):

- train: `trainer.train()` - every epoch of shuffled batches of 16: forward, loss, backward,
  clipping at 1.0, AdamW, linear decay to 0 - timed by the Trainer itself (`train_runtime`,
  `train_samples_per_second` from train()'s metrics);
- eval: `trainer.evaluate()` once after training, in batches of 64, accuracy as
  `compute_metrics` (`eval_runtime`, `eval_samples_per_second`, `eval_accuracy`).

The model is the `--model-dir` LM checkpoint (usually the random gpt2-size model the crate's
`bench prepare` writes, target/bench-models/gpt2) loaded as
`GPT2ForSequenceClassification.from_pretrained(dir, num_labels=2)` (a new `score` head, drawn
under `torch.manual_seed(--seed)`), `model.config.pad_token_id = 50256`, dropout on as the
checkpoint's config says (the Trainer's `model.train()`). The tokenizer is the model directory's
tokenizer.json, else the bundled data/gpt2-tokenizer/tokenizer.json (as the crate), pad = eos =
50256, truncation at `--max-length`, no special tokens. `--padding max_length` pads every row to
`--max-length` (`default_data_collator`, the tutorial's); `longest` pads each batch to its longest
row (`DataCollatorWithPadding`).

TrainingArguments are the tutorial's (`TrainingArguments::tutorial` in src/train/args.rs):
learning_rate 2e-5, batch 16, eval batch 64, weight_decay 0.01, seed 42, logging_steps 500,
transformers' defaults for the rest (linear schedule, no warm-up, max_grad_norm 1.0, AdamW betas
0.9/0.999, eps 1e-8; `optim` is transformers' default, "adamw_torch_fused" on torch >= 2.8,
reported as `optim`). Unlike the tutorial (and the crate's example, which evaluates and saves a
checkpoint after every epoch, inside its timed `train()`), evaluation and saving during training
are off by default (`eval_strategy="no"`, `save_strategy="no"`); `--per-epoch` turns both on
("epoch", into a temporary directory) to do exactly what the example does. Also: `report_to=[]`,
`use_cpu=True`, `disable_tqdm=True`, dataloader defaults (no workers, drop_last False).

Rows: `--train-rows N` / `--eval-rows N` take the rows the example's `--train-limit N` /
`--eval-limit N` take (`Split::subset(N, seed)`: the first N of the crate's seeded permutation
`epoch_order(len, seed, 0, shuffle=true)` - ChaCha8 seeded with `seed_from_u64(seed)`, rand 0.9's
shuffle - put back in file order). If N is larger than the split, the split's rows are repeated
cyclically in file order up to N (the example cannot do that: it uses the whole split then, so
compare such runs only against a data directory that holds N rows). `--order crate` (default)
makes the Trainer visit the training rows each epoch in the crate's order, `epoch_order(rows,
seed, epoch, true)`, so that both sides form the same batches (with `longest` padding the same
padded shapes, hence the same work: the JSON's `total_flos` equals the crate's, epoch after
epoch, each in its own order); `--order torch` keeps the Trainer's own RandomSampler.

What the figures count. transformers' `train_samples_per_second` is `num_train_samples / runtime`
with `num_train_samples = len(train_dataset) * num_train_epochs` (rows x epochs, not padded
tokens; max_steps x total batch when max_steps is set), runtime from just after the dataloader,
optimizer and scheduler are built to the end of the last step, including any per-epoch
evaluation and saving. The crate's (src/train/trainer.rs, `train_output`) counts the same: rows x
epochs (max_steps x batch x accumulation with max_steps), over the time from the start of
`train_with` (the optimizer already built in `Trainer::new`) to the end, evaluation and saving
included. Both round runtime to 4 decimals and the rate to 3. `eval_samples_per_second` is
rows / time of the whole `evaluate()` on both sides. With the example's per-epoch evaluation
and checkpoint saving (which its flags cannot turn off), compare against `--per-epoch`.

Usually run by scripts/bench.py with `--figures imdb`; alone:
    python scripts/reference/bench_imdb_trainer.py --model-dir target/bench-models/gpt2 --threads 2 \\
        --padding longest --train-rows 240 --eval-rows 80
"""

import argparse
import contextlib
import json
import pathlib
import resource
import sys
import tempfile

import pyarrow.parquet as pq
import torch
import transformers
from torch.utils.data import Sampler
from transformers import (
    DataCollatorWithPadding,
    GPT2ForSequenceClassification,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from reference_common import ListDataset, compute_metrics, encode, pad_eos_tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
EOS = 50256
NUM_LABELS = 2

# ---------------------------------------------------------------------------------------------
# The crate's `epoch_order` (src/data/packing.rs): ChaCha8Rng::seed_from_u64(seed), set_stream(epoch),
# then `order.shuffle(&mut rng)` with rand 0.9.

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
# tests/data.rs pins epoch_order(10, 1337, 0, true).
PINNED = ((10, 1337, 0), [1, 8, 2, 3, 7, 4, 5, 6, 0, 9])


class ChaCha8:
    """rand_chacha 0.9's ChaCha8Rng: key from rand_core's PCG32 `seed_from_u64`, 64-bit block
    counter in words 12-13, the stream in words 14-15, output words in order."""

    def __init__(self, seed, stream=0):
        state, key = seed & M64, []
        for _ in range(8):
            state = (state * 6364136223846793005 + 11634580027462260723) & M64
            xorshifted = (((state >> 18) ^ state) >> 27) & M32
            rot = state >> 59
            key.append(((xorshifted >> rot) | (xorshifted << (32 - rot))) & M32)
        self.key, self.stream, self.counter, self.buf = key, stream & M64, 0, []

    def _block(self):
        s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *self.key,
             self.counter & M32, self.counter >> 32, self.stream & M32, self.stream >> 32]
        x = list(s)

        def qr(a, b, c, d):
            x[a] = (x[a] + x[b]) & M32; x[d] ^= x[a]; x[d] = ((x[d] << 16) | (x[d] >> 16)) & M32
            x[c] = (x[c] + x[d]) & M32; x[b] ^= x[c]; x[b] = ((x[b] << 12) | (x[b] >> 20)) & M32
            x[a] = (x[a] + x[b]) & M32; x[d] ^= x[a]; x[d] = ((x[d] << 8) | (x[d] >> 24)) & M32
            x[c] = (x[c] + x[d]) & M32; x[b] ^= x[c]; x[b] = ((x[b] << 7) | (x[b] >> 25)) & M32

        for _ in range(4):  # 8 rounds
            qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)
            qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)
        self.counter = (self.counter + 1) & M64
        self.buf = [(a + b) & M32 for a, b in zip(x, s)][::-1]

    def next_u32(self):
        if not self.buf:
            self._block()
        return self.buf.pop()

    def below(self, bound):
        """rand 0.9's `random_range(..bound)` for u32 (Canon's method, the default "biased" one)."""
        prod = self.next_u32() * bound
        result, lo = prod >> 32, prod & M32
        if lo > ((-bound) & M32):
            new_hi = (self.next_u32() * bound) >> 32
            result += (lo + new_hi) > M32
        return result


def _bound_u32(m):
    """rand 0.9's calculate_bound_u32: (m (m+1) ... (m+k-1), k) with the largest k that fits u32."""
    product, current = m, m + 1
    while product * current <= M32:
        product *= current
        current += 1
    return product, current - m


def epoch_order(n, seed, epoch, shuffle=True):
    order = list(range(n))
    if not shuffle or n <= 1:
        return order
    rng = ChaCha8(seed, epoch)
    # SliceRandom::shuffle = partial_shuffle(len): IncreasingUniform from 0, swap(i, index).
    chunk, remaining, k = 0, 1, 0  # IncreasingUniform::new(rng, 0): chunk_remaining 1
    for i in range(n):
        nxt = k + 1
        if remaining == 0:
            bound, count = _bound_u32(nxt)
            chunk = rng.below(bound)
            remaining = count
        remaining -= 1
        if remaining == 0:
            index = chunk
        else:
            index, chunk = chunk % nxt, chunk // nxt
        k = nxt
        order[i], order[index] = order[index], order[i]
    return order


assert epoch_order(*PINNED[0]) == PINNED[1], "epoch_order no longer matches tests/data.rs's pinned order"


def take_rows(texts, labels, n, seed):
    """The example's `split.subset(n, seed)` for n <= len; above, the rows repeated cyclically."""
    if n is None:
        return texts, labels, "all"
    if n <= len(texts):
        picked = sorted(epoch_order(len(texts), seed, 0)[:n])
        how = "subset" if n < len(texts) else "all"
    else:
        picked = [i % len(texts) for i in range(n)]
        how = "cyclic"
    return [texts[i] for i in picked], [labels[i] for i in picked], how


# ---------------------------------------------------------------------------------------------
# The data, the tokenizer and the model (as scripts/reference/make_trainer_fixtures.py).


def read_split(data_dir, name):
    """The split's files (`name*.parquet`, sorted), rows lacking a text or a label skipped."""
    files = sorted(p for p in data_dir.glob(f"{name}*.parquet"))
    if not files:
        sys.exit(f"no {name}*.parquet in {data_dir}")
    texts, labels = [], []
    for f in files:
        table = pq.read_table(f, columns=["text", "label"])
        for t, l in zip(table.column("text").to_pylist(), table.column("label").to_pylist()):
            if t and l is not None:
                texts.append(t)
                labels.append(int(l))
    return texts, labels


def load_tokenizer(model_dir):
    own = model_dir / "tokenizer.json"
    return pad_eos_tokenizer(own if own.exists() else ROOT / "data/gpt2-tokenizer/tokenizer.json")


class CrateOrderSampler(Sampler):
    """Each epoch's rows in the crate's order, `epoch_order(n, seed, epoch, true)`. The Trainer
    calls set_epoch before every epoch; without it, each new iteration is the next epoch."""

    def __init__(self, n, seed):
        self.n, self.seed, self.epoch, self.iterated = n, seed, None, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.n

    def __iter__(self):
        epoch = self.epoch if self.epoch is not None else self.iterated
        self.iterated += 1
        return iter(epoch_order(self.n, self.seed, epoch))


class CrateOrderTrainer(Trainer):
    def _get_train_sampler(self, train_dataset=None):
        if train_dataset is None:
            train_dataset = self.train_dataset
        return CrateOrderSampler(len(train_dataset), self.args.seed)


def run(args, tmp):
    tok = load_tokenizer(args.model_dir)
    train_texts, train_labels, train_how = take_rows(*read_split(args.data_dir, "train"), args.train_rows, args.seed)
    eval_texts, eval_labels, eval_how = take_rows(*read_split(args.data_dir, "test"), args.eval_rows, args.seed)
    train_rows = encode(tok, train_texts, train_labels, args.padding, args.max_length)
    eval_rows = encode(tok, eval_texts, eval_labels, args.padding, args.max_length)

    torch.manual_seed(args.seed)
    model = GPT2ForSequenceClassification.from_pretrained(
        args.model_dir, num_labels=NUM_LABELS, attn_implementation=args.attention, dtype=torch.float32,
    )
    model.config.pad_token_id = EOS
    if args.max_length > model.config.n_positions:
        sys.exit(f"--max-length {args.max_length} is longer than the model's {model.config.n_positions} positions")

    per_epoch = "epoch" if args.per_epoch else "no"
    targs = TrainingArguments(
        output_dir=tmp,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        num_train_epochs=args.epochs,
        weight_decay=0.01,
        seed=args.seed,
        logging_steps=500,
        eval_strategy=per_epoch,
        save_strategy=per_epoch,
        report_to=[],
        use_cpu=args.device == "cpu",
        disable_tqdm=True,
    )
    collator = default_data_collator if args.padding == "max_length" else DataCollatorWithPadding(tok)
    cls = CrateOrderTrainer if args.order == "crate" else Trainer
    trainer = cls(
        model=model,
        args=targs,
        train_dataset=ListDataset(train_rows),
        eval_dataset=ListDataset(eval_rows),
        processing_class=tok,
        data_collator=collator,
        compute_metrics=compute_metrics,
    )
    result = trainer.train()
    train_metrics = dict(result.metrics)
    eval_metrics = trainer.evaluate()
    optim = targs.optim.value if hasattr(targs.optim, "value") else str(targs.optim)
    return {
        "side": "transformers",
        "size": args.model_dir.name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "device": str(trainer.args.device),
        "padding": args.padding,
        "max_length": args.max_length,
        "train_rows": len(train_rows),
        "eval_rows": len(eval_rows),
        "rows_taken": {"train": train_how, "eval": eval_how},
        "epochs": args.epochs,
        "attention": args.attention,
        "order": args.order,
        "per_epoch_eval_and_save": args.per_epoch,
        "optim": optim,
        "global_step": result.global_step,
        "train_runtime": train_metrics["train_runtime"],
        "train_samples_per_second": train_metrics["train_samples_per_second"],
        "train_steps_per_second": train_metrics.get("train_steps_per_second"),
        # The PrinterCallback that disable_tqdm=True installs pops total_flos out of train()'s
        # metrics; the state keeps it.
        "total_flos": trainer.state.total_flos,
        "train_loss": train_metrics["train_loss"],
        "eval_runtime": eval_metrics["eval_runtime"],
        "eval_samples_per_second": eval_metrics["eval_samples_per_second"],
        "eval_accuracy": eval_metrics["eval_accuracy"],
        "eval_loss": eval_metrics["eval_loss"],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=pathlib.Path, required=True,
                   help="a GPT-2 LM checkpoint directory (config.json, model.safetensors)")
    p.add_argument("--data-dir", type=pathlib.Path, default=ROOT / "data/imdb-sample",
                   help="train*.parquet and test*.parquet with columns text, label")
    p.add_argument("--padding", choices=["max_length", "longest"], default="max_length")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--train-rows", type=int, help="default: the whole split")
    p.add_argument("--eval-rows", type=int, help="default: the whole split")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--attention", choices=["eager", "sdpa"], default="sdpa")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: the Trainer's own choice of GPU (use_cpu=False)")
    p.add_argument("--order", choices=["crate", "torch"], default="crate",
                   help="training row order: the crate's epoch_order (same batches) or the Trainer's RandomSampler")
    p.add_argument("--per-epoch", action="store_true",
                   help="evaluate and save a checkpoint after every epoch inside train(), as the crate's example does")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()

    # The Trainer's PrinterCallback prints its logs on stdout: keep stdout for the one JSON line.
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory() as tmp:
        out = run(args, tmp)
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

"""The benchmark of chapter 6's loop: the tutorial's own PyTorch code, timed.

The loop as the tutorial printed it - a `JokesDataset` of `"JOKE: " + joke + "<|endoftext|>"`
texts, `DataLoader(batch_size=1, shuffle=True)`, the greedy packing into sequences of at most
`--max-seq-len` tokens (an appended joke loses its first token, as `joke_tens[:, 1:]` does), one
`backward` per packed sequence with `labels=ids`, an optimizer step every `--accumulate`
sequences, `get_linear_schedule_with_warmup(num_training_steps=-1)` - on `GPT2LMHeadModel` in
eval mode, dropout off, as in the tutorial: `from_pretrained` returns the model in eval mode and
the tutorial's loop never calls `model.train()`. Stops after `--steps` optimizer steps and
prints one JSON object: jokes read from the loader per second of the loop (the crate's
`jokes_per_second`, counted the same way), the sequences and the losses.

transformers 5 no longer has the tutorial's `transformers.AdamW`; PyTorch is credited with its
fastest optimizer instead, `torch.optim.AdamW(fused=True)` with the tutorial's eps (1e-6) and no
weight decay. `--dtype bf16` casts the model as `model.to(torch.bfloat16)` (pure bf16, like the
crate's `--dtype bf16` in the tutorial recipe); `--dtype f16` is the tutorial's own `model.half()`.
`--device cuda` moves the model and each packed sequence there, as the tutorial's
`model.to(device)` and `work_jokes_tens.to(device)` do (scripts/gpu_run.sh).

Usually run by scripts/bench.py (`--figures jokes`); alone:
    python scripts/reference/bench_jokes_loop.py --model-dir target/bench-models/gpt2 \
        --data target/bench-data/jokes.parquet --threads 2
"""

import argparse
import json
import pathlib
import resource
import time

import pyarrow.parquet as pq
import torch
import transformers
from torch.utils.data import DataLoader, Dataset
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast, get_linear_schedule_with_warmup

ROOT = pathlib.Path(__file__).resolve().parents[2]
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


class JokesDataset(Dataset):
    """The tutorial's dataset, reading the parquet file the crate reads instead of its CSV."""

    def __init__(self, path):
        super().__init__()
        self.end_of_text_token = "<|endoftext|>"
        jokes = pq.read_table(path).column("Joke").to_pylist()
        self.joke_list = [f"JOKE: {joke}{self.end_of_text_token}" for joke in jokes]

    def __len__(self):
        return len(self.joke_list)

    def __getitem__(self, item):
        return self.joke_list[item]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=pathlib.Path, required=True)
    p.add_argument("--data", type=pathlib.Path, required=True, help="a parquet file with a Joke column")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=list(DTYPES), default="f32")
    p.add_argument("--steps", type=int, default=2, help="optimizer steps, then stop")
    p.add_argument("--accumulate", type=int, default=32, help="the tutorial's BATCH_SIZE: sequences per step")
    p.add_argument("--max-seq-len", type=int, default=500)
    p.add_argument("--lr", type=float, default=3e-6)
    p.add_argument("--warmup", type=int, default=5000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--attention", choices=["eager", "sdpa"], default="eager")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(ROOT / "data/gpt2-tokenizer/tokenizer.json"))
    model = GPT2LMHeadModel.from_pretrained(args.model_dir, attn_implementation=args.attention)
    model = model.to(DTYPES[args.dtype]).to(args.device)
    # No model.train(): from_pretrained leaves the model in eval mode (dropout off), and the
    # tutorial's loop trains it that way.
    assert not model.training
    dataset = JokesDataset(args.data)
    joke_loader = DataLoader(dataset, batch_size=1, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, eps=1e-6, weight_decay=0.0, fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=args.warmup, num_training_steps=-1)

    # The tutorial's loop, with its names; `jokes` and `sequences` count for the figures.
    proc_seq_count = 0
    batch_count = 0
    tmp_jokes_tens = None
    jokes, sequences, losses = 0, 0, []
    started = time.perf_counter()
    done = False
    while not done:
        for joke in joke_loader:
            jokes += 1
            joke_tens = torch.tensor(tokenizer.encode(joke[0])).unsqueeze(0)
            if joke_tens.size()[1] > args.max_seq_len:
                continue
            if not torch.is_tensor(tmp_jokes_tens):
                tmp_jokes_tens = joke_tens
                continue
            if tmp_jokes_tens.size()[1] + joke_tens.size()[1] > args.max_seq_len:
                work_jokes_tens = tmp_jokes_tens
                tmp_jokes_tens = joke_tens
            else:
                tmp_jokes_tens = torch.cat([tmp_jokes_tens, joke_tens[:, 1:]], dim=1)
                continue
            work_jokes_tens = work_jokes_tens.to(args.device)
            outputs = model(work_jokes_tens, labels=work_jokes_tens)
            loss = outputs[0]
            loss.backward()
            losses.append(loss.item())
            sequences += 1
            proc_seq_count += 1
            if proc_seq_count == args.accumulate:
                proc_seq_count = 0
                batch_count += 1
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                model.zero_grad()
                if batch_count == args.steps:
                    done = True
                    break
    seconds = time.perf_counter() - started
    print(json.dumps({
        "side": "pytorch",
        "loop": "the tutorial's",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": args.threads,
        "device": args.device,
        "dtype": args.dtype,
        "attention": args.attention,
        "optimizer": "torch.optim.AdamW(fused=True, eps=1e-6, weight_decay=0)",
        "optimizer_steps": batch_count,
        "sequences": sequences,
        "jokes": jokes,
        "seconds": seconds,
        "jokes_per_second": jokes / seconds,
        "losses": losses,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    main()

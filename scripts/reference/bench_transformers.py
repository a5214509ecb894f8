"""The benchmark against transformers: the reference side.

Times Hugging Face transformers' GPT2LMHeadModel (float32, CPU, batch 1) on the random benchmark
model the crate writes (`cargo run --release --example bench -- prepare`), doing what
`examples/bench.rs` does, and prints one JSON object of figures:

- decode: `generate` of 64 new tokens after the tutorial's prompt (KV cache, greedy);
- naive: the loop without a cache, the whole sequence re-run every step;
- prefill: one forward of 500 tokens (logits for every position, as the crate's `forward`);
- train: one training step on 500 tokens: forward, loss, backward, AdamW (model.train()).

Attention runs as "eager" and "sdpa" and each figure reports the faster; AdamW is PyTorch's
`fused=True` (faster than its default here). The crate is compared with transformers at its best.
`rss` is a separate process that loads, generates once and reports its peak resident memory.

On a GPU (scripts/gpu_run.sh does this): `--device cuda --dtype f16` for the inference figures,
`--train-precision mixed-f16|mixed-bf16` (autocast, with GradScaler for f16; f32 master weights)
or `f16|bf16` (the model cast to half, as `model.half()`) for the training step.

Usually run by scripts/bench.py; alone:
    python scripts/reference/bench_transformers.py run --model-dir target/bench-models/gpt2 --threads 2
"""

import argparse
import json
import pathlib
import resource
import statistics
import time

import torch
import transformers
from transformers import GPT2LMHeadModel, GPT2TokenizerFast

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROMPT = "Hello, I'm a language model,"
DECODE_TOKENS = 64
LONG_TOKENS = 500
EOS = 50256
ATTENTION = ["eager", "sdpa"]


def long_input(n, vocab):
    """The crate's `workloads::long_input`: token i is (1009 i + 17) mod V."""
    return torch.tensor([[(1009 * i + 17) % vocab for i in range(n)]])


DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
DEVICE = torch.device("cpu")


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(reps, f):
    f()  # warm-up, untimed
    sync()
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        f()
        sync()
        out.append(time.perf_counter() - start)
    return out


def figure(tokens, times, **extra):
    s = statistics.median(times)
    return {"seconds": s, "tokens_per_s": tokens / s, "tokens": tokens, "times": times, **extra}


def best(tokens, runs):
    """runs: {variant: times}; the variant with the lowest median."""
    name = min(runs, key=lambda k: statistics.median(runs[k]))
    return figure(tokens, runs[name], variant=name, variants={k: statistics.median(v) for k, v in runs.items()})


def load(model_dir, attn, dtype=torch.float32):
    model = GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation=attn, dtype=dtype).to(DEVICE)
    # Random weights may well pick <|endoftext|>: never stop early, as the crate's side does not.
    model.generation_config.eos_token_id = None
    return model.eval()


def prompt_ids():
    tok = GPT2TokenizerFast(tokenizer_file=str(ROOT / "data/gpt2-tokenizer/tokenizer.json"))
    return tok(PROMPT, return_tensors="pt").input_ids.to(DEVICE)


def generate(model, ids):
    with torch.no_grad():
        return model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=DECODE_TOKENS,
            pad_token_id=EOS,
        )


def naive(model, ids):
    with torch.no_grad():
        for _ in range(DECODE_TOKENS):
            logits = model(ids, use_cache=False, logits_to_keep=1).logits[:, -1, :]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


def prefill(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


def train_times(model_dir, attn, fused, ids, reps, precision="f32"):
    """One training step's times. precision: f32; mixed-f16 / mixed-bf16 (f32 weights, autocast,
    GradScaler for f16); f16 / bf16 (the model itself in half, as after `model.half()`)."""
    mixed = precision.startswith("mixed-")
    weights = torch.float32 if mixed else DTYPES[precision]
    model = GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation=attn, dtype=weights).to(DEVICE)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=fused)
    half = DTYPES[precision.removeprefix("mixed-")]
    scaler = torch.amp.GradScaler(DEVICE.type, enabled=precision == "mixed-f16")

    def step():
        with torch.autocast(DEVICE.type, dtype=half, enabled=mixed):
            loss = model(ids, labels=ids, use_cache=False).loss
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return timed(reps, step)


def run(args):
    model_dir = args.model_dir
    figures = set(args.figures.split(","))
    ids = prompt_ids()
    long = long_input(LONG_TOKENS, 50257).to(DEVICE)
    out = {
        "side": "transformers",
        "size": model_dir.name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prompt_tokens": ids.shape[1],
    }
    if DEVICE.type != "cpu" or args.dtype != "f32" or args.train_precision != "f32":
        out.update(device=str(DEVICE), dtype=args.dtype, train_precision=args.train_precision)
    decode, naive_runs, pre = {}, {}, {}
    for attn in ATTENTION:
        model = load(model_dir, attn, DTYPES[args.dtype])
        if "decode" in figures:
            decode[attn] = timed(args.reps, lambda: generate(model, ids))
        if "naive" in figures:
            naive_runs[attn] = timed(args.reps, lambda: naive(model, ids))
        if "prefill" in figures:
            pre[attn] = timed(args.reps, lambda: prefill(model, long))
        del model
    if decode:
        out["decode"] = best(DECODE_TOKENS, decode)
    if naive_runs:
        out["naive"] = best(DECODE_TOKENS, naive_runs)
        if decode:
            out["cached_over_naive"] = out["naive"]["seconds"] / out["decode"]["seconds"]
    if pre:
        out["prefill"] = best(LONG_TOKENS, pre)
    if "train" in figures:
        # AdamW with fused=True: one kernel per step, PyTorch's fastest on the CPU.
        runs = {f"{attn}, fused AdamW": train_times(model_dir, attn, True, long, args.reps, args.train_precision)
                for attn in ATTENTION}
        out["train"] = best(LONG_TOKENS, runs)
    print(json.dumps(out))


def rss(args):
    model = load(args.model_dir, "sdpa")
    generate(model, prompt_ids())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    size = (args.model_dir / "model.safetensors").stat().st_size
    print(json.dumps({
        "side": "transformers",
        "size": args.model_dir.name,
        "peak_rss_bytes": peak,
        "weights_bytes": size,
        "rss_over_weights": peak / size,
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "rss"])
    p.add_argument("--model-dir", type=pathlib.Path, required=True, help="written by `bench prepare`")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up; median reported")
    p.add_argument("--figures", default="decode,naive,prefill,train", help="comma-separated subset")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", choices=list(DTYPES), default="f32", help="precision of decode, naive, prefill")
    p.add_argument("--train-precision", choices=["f32", "mixed-f16", "mixed-bf16", "f16", "bf16"], default="f32",
                   help="precision of the training step")
    args = p.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if not (args.model_dir / "model.safetensors").exists():
        raise SystemExit(f"{args.model_dir} has no model.safetensors: run `cargo run --release --example bench -- prepare`")
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    {"run": run, "rss": rss}[args.command](args)


if __name__ == "__main__":
    main()

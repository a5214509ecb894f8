"""Golden numbers for chapter 6 (the jokes fine-tune), for tests/finetune.rs.

Loads the crate's bundled tiny GPT-2 (data/tiny-gpt2) into `GPT2LMHeadModel` on the CPU in
float32, the GPT-2 tokenizer (data/gpt2-tokenizer/tokenizer.json) and the bundled jokes
(data/jokes-sample/jokes.parquet, 283 rows, read in file order), and writes
tests/fixtures/jokes.json:

- `tokenizer`: the tutorial's text `"JOKE: " + joke + "<|endoftext|>"` for the first 6 jokes and
  its ids (`<|endoftext|>` inside the text is the single token 50256), and the token count of
  every joke's text;
- `packing`: the tutorial's greedy packing of all 283 jokes for max_seq_len 32 (26 jokes are too
  long there and skipped), 64 and 500 (the tutorial's), in two modes: `tutorial` (an appended
  joke loses its first token, the last buffer is dropped) and `full` (the fixed recipe: nothing
  dropped);
- `training`: three optimizer steps of 4 accumulated sequences each on the max_seq_len=64 packed
  sequences, with dropout off, in two recipes: `tutorial` (summed gradients, transformers 4.x's
  `AdamW`, re-implemented below since transformers 5 removed it, warmup with
  num_training_steps=-1) and `fixed` (averaged gradients, clipping at 1.0, `torch.optim.AdamW`,
  warmup then linear decay). Losses of every sequence, the lr of every step, gradient norms and
  probes of a few parameters;
  `recorded_lrs` is what the tutorial's `lrs` list keeps: `scheduler.get_last_lr()[0]` after
  `scheduler.step()`, the lr of the *next* step;
- `tutorial_loop`: the tutorial's own loop as it runs - the model straight from `from_pretrained`
  with the bundled config's dropout 0.1, in eval mode (the tutorial never calls `model.train()`,
  so dropout is off), the same three steps as `training.tutorial` - once in float32 (`f32`) and
  once after `model.half()` (`f16`: f16 weights, gradients and AdamW moments); after each, the
  tutorial's `model.generate(**inputs)` with its defaults (greedy, max_length 20 counting the
  prompt, pad = eos) on "JOKE:" and "My dog is cute and";
- `schedule`: `get_linear_schedule_with_warmup`'s lr after k scheduler steps, for the tutorial's
  settings (the epoch-end lrs it printed) and for a schedule that warms up and decays.

Run from the repository root:  python scripts/reference/make_jokes_fixtures.py
"""

import math

import pyarrow
import pyarrow.parquet as pq
import safetensors
import tokenizers
import torch
import transformers
from safetensors import safe_open
from torch.optim import Optimizer
from transformers import GPT2LMHeadModel, get_linear_schedule_with_warmup

from reference_common import dumps, parse_root, probe, provenance

FORMAT_VERSION = 1
COMMAND = "python scripts/reference/make_jokes_fixtures.py"
EOS = 50256
PREFIX = "JOKE: "
SUFFIX = "<|endoftext|>"
TOKENIZER_JOKES = 6
PACK_LENGTHS = [32, 64, 500]
# Only these lengths keep every packed sequence's ids in the JSON; the others keep lengths.
PACK_IDS_FOR = [32, 64, 500]
TRAIN_SEQ_LEN = 64
ACC = 4
STEPS = 3
# The checkpoint's own names (data/tiny-gpt2/model.safetensors). wte is tied with lm_head.
PROBES = [
    "transformer.wte.weight",
    "transformer.wpe.weight",
    "transformer.h.0.attn.c_attn.weight",
    "transformer.h.0.ln_1.weight",
    "transformer.h.1.mlp.c_proj.bias",
    "transformer.ln_f.bias",
]


class TransformersAdamW(Optimizer):
    """`transformers.AdamW` as in transformers 4.x `src/transformers/optimization.py`.

    The tutorial's `from transformers import AdamW`; transformers 5 removed the class, so its few
    lines of logic are copied here (checked line by line against transformers 4.44.2; the
    deprecation warning and the sparse-gradient error left out). It is not `torch.optim.AdamW`: the defaults are eps=1e-6, weight_decay=0.0,
    correct_bias=True, eps is added to sqrt(v) *before* the bias correction folds into the step
    size, and weight decay (none here) comes after the update.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, correct_bias=True):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "correct_bias": correct_bias}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                beta1, beta2 = group["betas"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=(1.0 - beta1))
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    bias_correction1 = 1.0 - beta1 ** state["step"]
                    bias_correction2 = 1.0 - beta2 ** state["step"]
                    step_size = step_size * math.sqrt(bias_correction2) / bias_correction1
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=(-group["lr"] * group["weight_decay"]))
        return loss


# ---------------------------------------------------------------------------------------------
# Data


def read_jokes(root):
    table = pq.read_table(root / "data/jokes-sample/jokes.parquet")
    return table.column("Joke").to_pylist()


def joke_text(joke):
    return PREFIX + joke + SUFFIX


def pack(all_ids, max_seq_len, mode):
    """The tutorial's packing loop, over token id lists in order.

    mode "tutorial": an appended joke loses its first token (`joke_tens[:,1:]`) although the fit
    test counts all its tokens, and the buffer left at the end of the data is never emitted.
    mode "full": appended jokes keep all their tokens, the fit test is the same, and the last
    buffer is emitted.
    """
    sequences = []
    skipped = 0
    buffer = None
    for ids in all_ids:
        if len(ids) > max_seq_len:
            skipped += 1
            continue
        if buffer is None:
            buffer = list(ids)
            continue
        if len(buffer) + len(ids) > max_seq_len:
            sequences.append(buffer)
            buffer = list(ids)
        elif mode == "tutorial":
            buffer = buffer + list(ids[1:])
        else:
            buffer = buffer + list(ids)
    leftover = len(buffer) if buffer is not None else 0
    if mode == "full" and buffer is not None:
        sequences.append(buffer)
    return {"sequences": sequences, "skipped_too_long": skipped, "leftover_len": leftover}


def packing_section(all_ids):
    out = {
        "max_seq_lens": PACK_LENGTHS,
        "note": "tutorial: an appended joke loses its first token but the fit test counts len(buffer) + "
        "len(ids) with all of its tokens; the buffer left at the end (leftover_len tokens) is never "
        "emitted. full: appended jokes keep every token, same fit test, the last buffer is emitted (so "
        "leftover_len is also the last sequence's length). A max_seq_len not in " + str(PACK_IDS_FOR)
        + " would keep only num_sequences and sequence_lens, not the sequences' ids.",
    }
    for n in PACK_LENGTHS:
        entry = {}
        for mode in ["tutorial", "full"]:
            p = pack(all_ids, n, mode)
            rec = {
                "num_sequences": len(p["sequences"]),
                "sequence_lens": [len(s) for s in p["sequences"]],
                "skipped_too_long": p["skipped_too_long"],
                "leftover_len": p["leftover_len"],
                "total_tokens": sum(len(s) for s in p["sequences"]),
            }
            if n in PACK_IDS_FOR:
                rec["sequences"] = p["sequences"]
            entry[mode] = rec
        out[str(n)] = entry
    return out


# ---------------------------------------------------------------------------------------------
# Training


def load_model(root, as_the_tutorial=False, half=False):
    """The bundled model. By default with dropout 0 in its config and in train mode, so that a
    training step is deterministic on both sides. `as_the_tutorial`: as the tutorial has it -
    the config's own dropout (0.1), and the eval mode `from_pretrained` returns, which the
    tutorial's loop never leaves; `half`: then `model.half()`, as the tutorial does."""
    if as_the_tutorial:
        model = GPT2LMHeadModel.from_pretrained(root / "data/tiny-gpt2", attn_implementation="eager",
                                                torch_dtype=torch.float32)
        assert model.config.resid_pdrop == 0.1 and model.config.attn_pdrop == 0.1 and model.config.embd_pdrop == 0.1
        assert not model.training, "from_pretrained returns the model in eval mode"
        if half:
            model = model.half()
    else:
        model = GPT2LMHeadModel.from_pretrained(
            root / "data/tiny-gpt2",
            attn_implementation="eager",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            torch_dtype=torch.float32,
        )
        model.train()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "wte must be tied"
    return model


def run_recipe(root, sequences, recipe, model=None):
    model = model if model is not None else load_model(root)
    params = list(model.parameters())
    if recipe["optimizer"] == "transformers4_AdamW":
        opt = TransformersAdamW(params, lr=recipe["lr"], betas=tuple(recipe["betas"]), eps=recipe["eps"],
                                weight_decay=recipe["weight_decay"], correct_bias=True)
    else:
        opt = torch.optim.AdamW(params, lr=recipe["lr"], betas=tuple(recipe["betas"]), eps=recipe["eps"],
                                weight_decay=recipe["weight_decay"])
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=recipe["warmup"],
                                            num_training_steps=recipe["num_training_steps"])
    opt.zero_grad()
    seq_losses, step_lrs, losses, grad_norms, probes = [], [], [], [], {"initial": probe(model, PROBES)}
    recorded_lrs = []
    grad_norms_exact = []
    for i in range(ACC * STEPS):
        ids = torch.tensor(sequences[i], dtype=torch.long).unsqueeze(0)
        loss = model(ids, labels=ids).loss
        seq_losses.append(loss.item())
        (loss / ACC if recipe["average_gradients"] else loss).backward()
        if (i + 1) % ACC == 0:
            step = (i + 1) // ACC
            if recipe["clip_grad_norm"] is not None:
                # The exact norm of these gradients too (summed in f64): clip_grad_norm_ sums the
                # squares in f32 lanes, which drifts low by a few parts in a million here.
                exact = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params if p.grad is not None))
                grad_norms_exact.append(float(exact))
                norm = torch.nn.utils.clip_grad_norm_(params, recipe["clip_grad_norm"])
                grad_norms.append(float(norm))
            step_lrs.append(opt.param_groups[0]["lr"])
            losses.append(loss.item())
            opt.step()
            sched.step()
            recorded_lrs.append(sched.get_last_lr()[0])
            opt.zero_grad()
            if step in (1, STEPS):
                probes[f"after_step_{step}"] = probe(model, PROBES)
    out = {
        "settings": recipe,
        "sequence_lens": [len(s) for s in sequences[: ACC * STEPS]],
        "sequence_losses": seq_losses,
        "step_lrs": step_lrs,
        "recorded_lrs": recorded_lrs,
        "losses": losses,
    }
    if grad_norms:
        out["grad_norms"] = grad_norms
        out["grad_norms_exact"] = grad_norms_exact
    out["probes"] = probes
    return out


def tutorial_settings():
    return {
        "packing": "tutorial",
        "max_seq_len": TRAIN_SEQ_LEN,
        "accumulate": ACC,
        "optimizer_steps": STEPS,
        "average_gradients": False,
        "clip_grad_norm": None,
        "optimizer": "transformers4_AdamW",
        "lr": 1e-3,
        "betas": [0.9, 0.999],
        "eps": 1e-6,
        "weight_decay": 0.0,
        "correct_bias": True,
        # With num_training_steps=-1 the lr is 0 from step W on (max(0, (-1 - k) / 1)), so W=3
        # keeps all three steps inside the warmup, where the tutorial's run stays (W=5000).
        "warmup": 3,
        "num_training_steps": -1,
    }


def training_section(root, all_ids):
    packed = {mode: pack(all_ids, TRAIN_SEQ_LEN, mode)["sequences"] for mode in ["tutorial", "full"]}
    tutorial = tutorial_settings()
    fixed = {
        "packing": "full",
        "max_seq_len": TRAIN_SEQ_LEN,
        "accumulate": ACC,
        "optimizer_steps": STEPS,
        "average_gradients": True,
        "clip_grad_norm": 1.0,
        "optimizer": "torch.optim.AdamW",
        "lr": 1e-3,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "weight_decay": 0.0,
        "warmup": 1,
        "num_training_steps": STEPS,
    }
    return {
        "note": "GPT2LMHeadModel from data/tiny-gpt2 in float32 on the CPU, loaded with resid_pdrop = "
        "embd_pdrop = attn_pdrop = 0.0 (dropout off, so both sides are deterministic), attn_implementation "
        "eager, model.train(). The packed sequences of max_seq_len 64 in their order, each fed alone as a "
        "(1, T) batch: loss = model(ids, labels=ids).loss (mean over the T-1 shifted targets). Every "
        "sequence does one backward (the tutorial's: the loss itself, gradients summed; the fixed: loss / "
        "accumulate); after every `accumulate` sequences: [fixed: clip_grad_norm_(all parameters, 1.0), "
        "grad_norms is the total norm before clipping, grad_norms_exact the same summed in f64], optimizer.step(), scheduler.step(), zero_grad(). "
        "step_lrs[s] is the lr optimizer step s+1 used (the schedule's factor at scheduler step s); recorded_lrs[s] "
        "is scheduler.get_last_lr()[0] after that step's scheduler.step() (the tutorial's lrs.append), "
        "the lr of step s+2; losses[s] "
        "is the loss of that step's last sequence (the tutorial's losses.append(loss.item())). Probes are "
        "taken initially, after step 1 and after step 3: `first` = the first 8 values of the flattened "
        "tensor (checkpoint layout, Conv1D weights as [in, out]), `strided` = the values at indices 0, "
        "stride, ..., 7*stride with stride = numel // 8, `sum_f64` = the sum in float64. wte is tied with "
        "lm_head (one parameter, both gradients). The tutorial's first step runs at lr 0, so after_step_1 "
        "equals initial there (its moments still move).",
        "tutorial": run_recipe(root, packed["tutorial"], tutorial),
        "fixed": run_recipe(root, packed["full"], fixed),
    }


GENERATE_PROMPTS = ["JOKE:", "My dog is cute and"]


def tutorial_loop_section(root, all_ids, tok):
    """The tutorial's loop as it runs (see the module's docstring), f32 and f16, then generate."""
    packed = pack(all_ids, TRAIN_SEQ_LEN, "tutorial")["sequences"]
    recipe = tutorial_settings()
    out = {
        "note": "GPT2LMHeadModel.from_pretrained(data/tiny-gpt2) with the config's dropout 0.1, in the eval "
        "mode from_pretrained returns (the tutorial never calls model.train(), so dropout is off); `f16` "
        "after model.half(). The settings, sequences and loop of training.tutorial. After the three steps, "
        "`generated[prompt]` is model.generate(**tokenizer(prompt, return_tensors='pt')) with the model's "
        "generation defaults (greedy, max_length 20 with the prompt, stopping at eos) and pad_token_id = eos: "
        "the prompt's ids and the new ones.",
    }
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(root / "data/gpt2-tokenizer/tokenizer.json"))
    for name, half in [("f32", False), ("f16", True)]:
        model = load_model(root, as_the_tutorial=True, half=half)
        run = run_recipe(root, packed, recipe, model=model)
        assert not model.training
        generated = {}
        with torch.no_grad():
            for prompt in GENERATE_PROMPTS:
                inputs = fast(prompt, return_tensors="pt")
                # transformers 4's defaults, which the tutorial ran with, spelled out (transformers 5
                # leaves some of them unset in the model's generation config).
                ids = model.generate(**inputs, do_sample=False, num_beams=1, max_length=20,
                                     eos_token_id=EOS, pad_token_id=EOS)
                assert ids.shape[1] <= 20
                generated[prompt] = ids[0].tolist()
        run["generated"] = generated
        run["dtype"] = "float16" if half else "float32"
        out[name] = run
    return out


def schedule_section():
    def lrs(base, warmup, total, ks):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=base)
        sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=total)
        out, done = [], 0
        for k in ks:
            while done < k:
                opt.step()
                sched.step()
                done += 1
            out.append(opt.param_groups[0]["lr"])
        return {"base_lr": base, "num_warmup_steps": warmup, "num_training_steps": total, "k": ks, "lr": out}

    return {
        "note": "get_linear_schedule_with_warmup: lr[i] is the lr after k[i] scheduler.step() calls, i.e. "
        "base_lr * (k / max(1, W) if k < W else max(0, (N - k) / max(1, N - W))). With N = -1 the lr is 0 "
        "from k = W on: -1 never means 'no decay', it only works for the tutorial because its 1933 steps "
        "stay below W = 5000.",
        "tutorial_epoch_ends": {
            **lrs(3e-6, 5000, -1, [385, 770, 1155, 1541, 1933]),
            "printed": [2.31e-7, 4.62e-7, 6.93e-7, 9.25e-7, 1.16e-6],
        },
        "tutorial_past_warmup": lrs(3e-6, 5000, -1, [4999, 5000, 5001, 10000]),
        "warmup_then_decay": lrs(5e-5, 10, 100, [0, 1, 5, 10, 11, 50, 99, 100, 120]),
    }


def main():
    root = parse_root(__doc__)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    tok = tokenizers.Tokenizer.from_file(str(root / "data/gpt2-tokenizer/tokenizer.json"))
    jokes = read_jokes(root)
    texts = [joke_text(j) for j in jokes]
    all_ids = [tok.encode(t).ids for t in texts]
    assert all(ids[-1] == EOS and EOS not in ids[:-1] for ids in all_ids), "<|endoftext|> must be one token"
    # The tokenizer the tutorial used (through transformers) must agree.
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(root / "data/gpt2-tokenizer/tokenizer.json"))
    assert all(fast.encode(t) == ids for t, ids in zip(texts, all_ids))

    fixture = {
        **provenance(FORMAT_VERSION, COMMAND),
        "tokenizers": tokenizers.__version__,
        "pyarrow": pyarrow.__version__,
        "model": "data/tiny-gpt2",
        "data": "data/jokes-sample/jokes.parquet",
        "tokenizer": {
            "file": "data/gpt2-tokenizer/tokenizer.json",
            "text": "\"JOKE: \" + joke + \"<|endoftext|>\"; <|endoftext|> is the single token 50256, no token is "
            "added before or after",
            "num_jokes": len(jokes),
            "examples": [{"joke": j, "text": t, "ids": ids}
                         for j, t, ids in list(zip(jokes, texts, all_ids))[:TOKENIZER_JOKES]],
            "all_lens": [len(ids) for ids in all_ids],
        },
        "packing": packing_section(all_ids),
        "training": training_section(root, all_ids),
        "tutorial_loop": tutorial_loop_section(root, all_ids, tok),
        "schedule": schedule_section(),
    }
    out = root / "tests/fixtures/jokes.json"
    out.write_text(dumps(fixture), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

"""Golden values from Hugging Face transformers for the heads (chapter 4) and the loss (chapter 5).

Loads the crate's bundled tiny GPT-2 (data/tiny-gpt2) into each of transformers' five GPT-2
classes on the CPU in float32 (eval mode: dropout off) and writes:

- tests/fixtures/heads.safetensors: the head weights this script draws (so that Rust runs the
  very same heads: `score.weight`, `classifier.*`, `qa_outputs.*`), every head's outputs on the
  tutorial prompt, the padded batches' pooled logits, and PyTorch's gradients of the losses;
- tests/fixtures/heads.json: token ids, losses, what `from_pretrained` reported as newly
  initialised for each class, and the module trees `print(model)` shows;
- tests/fixtures/heads-hf-written/: a small GPT2ForSequenceClassification checkpoint saved by
  `save_pretrained`, whose `score.weight` the Rust side must load rather than initialise.

Run from the repository root:  python scripts/reference/make_heads_fixtures.py
"""

import json
import pathlib

import safetensors.torch
import torch
from transformers import (
    GPT2Config,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
    GPT2TokenizerFast,
)

from reference_common import parse_root, provenance

FORMAT_VERSION = 1
COMMAND = "python scripts/reference/make_heads_fixtures.py"

PROMPT = "Hello, I'm a language model,"
NUM_LABELS = 5
CLASSES = [
    GPT2Model,
    GPT2LMHeadModel,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2ForQuestionAnswering,
]
# Right-padded batch for sequence classification. The last text ends in a real end-of-text
# token, which is what tells "pad = eos" apart from "pad != eos".
BATCH = ["Hello, I'm a language model,", "The movie was great", "Terrible.<|endoftext|>"]
BATCH_LABELS = [1, 4, 0]
PAD_NOT_EOS = 0  # token "!", which none of the texts contains
PROMPT_CLASS_LABEL = 3
TOKEN_LABELS = [0, 1, 2, 3, 4, 0, 1, -100]
IGNORED_PREFIX = 3  # labels of the first 3 tokens set to -100 for the ignored-label loss
# Parameters whose gradients we record, and for the 50257 x 64 wte only some rows (its full
# gradient is dense through the tied LM head, and 12 MB is too much to commit).
LM_GRAD_PARAMS = ["wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.1.mlp.c_proj.bias", "ln_f.weight"]
WTE_ROWS = list(range(8)) + [11, 257, 314, 1101, 2746, 3303, 15496, 50256]  # + the prompt's ids
SEQ_GRAD_PARAMS = ["score.weight", "h.1.ln_2.bias", "h.0.attn.c_attn.weight"]


def tokenizer(root: pathlib.Path) -> GPT2TokenizerFast:
    return GPT2TokenizerFast(tokenizer_file=str(root / "data/gpt2-tokenizer/tokenizer.json"))


def head_weights() -> dict:
    """The head weights both sides use. Larger than GPT-2's N(0, 0.02), and with non-zero biases,
    so that the outputs are O(1) and a forgotten bias would show."""
    g = torch.Generator().manual_seed(20240604)
    c = 64

    def n(*shape, std):
        return (torch.randn(*shape, generator=g) * std).contiguous()

    return {
        "score.weight": n(NUM_LABELS, c, std=0.5),
        "classifier.weight": n(NUM_LABELS, c, std=0.5),
        "classifier.bias": n(NUM_LABELS, std=0.5),
        "qa_outputs.weight": n(2, c, std=0.5),
        "qa_outputs.bias": n(2, std=0.5),
    }


def load(cls, model_dir, heads):
    kwargs = {"num_labels": NUM_LABELS} if cls not in (GPT2Model, GPT2LMHeadModel) else {}
    model, info = cls.from_pretrained(
        model_dir, output_loading_info=True, attn_implementation="eager", **kwargs
    )
    report = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys")}
    own = {k: v for k, v in heads.items() if k in model.state_dict()}
    model.load_state_dict(own, strict=False)
    return model.eval(), report


def module_trees(root):
    """`print(model)` for each class, on the tiny config and on configs that exercise every
    formatting branch (one layer, other activations, epsilon and dropout values)."""
    base = json.loads((root / "data/tiny-gpt2/config.json").read_text())
    variants = [
        {},
        {"n_layer": 1, "activation_function": "relu", "layer_norm_epsilon": 1e-6, "attn_pdrop": 0.0},
        {"activation_function": "gelu", "resid_pdrop": 0.25, "embd_pdrop": 0.0, "n_inner": 100},
        {"activation_function": "gelu_pytorch_tanh", "layer_norm_epsilon": 0.001},
        {"n_layer": 12, "n_head": 12, "n_embd": 768},
    ]
    keys = ["vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
            "layer_norm_epsilon", "resid_pdrop", "embd_pdrop", "attn_pdrop"]
    out = []
    for over in variants:
        cfg_dict = {k: base.get(k) for k in keys} | over
        cfg = GPT2Config(**cfg_dict, num_labels=NUM_LABELS)
        for cls in CLASSES:
            with torch.device("meta"):
                model = cls(cfg)
            out.append({"config": cfg_dict, "class": cls.__name__, "num_labels": NUM_LABELS, "tree": str(model)})
    return out


def pad_batch(tok, pad_id):
    rows = [tok(t).input_ids for t in BATCH]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def grads(model, names, prefix=""):
    params = dict(model.named_parameters())
    out = {}
    for name in names:
        g = params[prefix + name].grad
        if name == "wte.weight":
            out["wte.weight.rows"] = g[WTE_ROWS].contiguous()
            out["wte.weight.norm"] = g.norm().reshape(1)
        else:
            out[name] = g.contiguous()
    return out


def main():
    root = parse_root(__doc__)
    fixtures = root / "tests/fixtures"
    model_dir = root / "data/tiny-gpt2"
    tok = tokenizer(root)
    heads = head_weights()
    tensors = dict(heads)
    meta = {
        **provenance(FORMAT_VERSION, COMMAND),
        "model": "data/tiny-gpt2",
        "num_labels": NUM_LABELS,
        "prompt": {"text": PROMPT},
        "loading": {},
        "module_trees": module_trees(root),
    }
    ids = tok(PROMPT, return_tensors="pt").input_ids
    meta["prompt"]["input_ids"] = ids[0].tolist()
    models = {}
    for cls in CLASSES:
        models[cls.__name__], meta["loading"][cls.__name__] = load(cls, model_dir, heads)

    with torch.no_grad():
        tensors["base.last_hidden_state"] = models["GPT2Model"](ids).last_hidden_state
        lm = models["GPT2LMHeadModel"]
        out = lm(ids, labels=ids)
        # The full logits are 8 x 50257; a slice plus each row's logsumexp pins them.
        tensors["lm.logits.first1000"] = out.logits[..., :1000].contiguous()
        tensors["lm.logits.logsumexp"] = out.logits.logsumexp(-1)
        ignored = ids.clone()
        ignored[:, :IGNORED_PREFIX] = -100
        meta["lm"] = {
            "loss": float(out.loss),
            "ignored_prefix": IGNORED_PREFIX,
            "loss_with_ignored": float(lm(ids, labels=ignored).loss),
        }
        seq = models["GPT2ForSequenceClassification"]
        out = seq(ids, labels=torch.tensor([PROMPT_CLASS_LABEL]))
        tensors["seq.logits"] = out.logits
        meta["seq"] = {"label": PROMPT_CLASS_LABEL, "loss": float(out.loss), "batches": {}}
        tokc = models["GPT2ForTokenClassification"]
        out = tokc(ids, labels=torch.tensor([TOKEN_LABELS]))
        tensors["token.logits"] = out.logits
        meta["token"] = {"labels": TOKEN_LABELS, "loss": float(out.loss)}
        out = models["GPT2ForQuestionAnswering"](ids)
        tensors["qa.start_logits"] = out.start_logits
        tensors["qa.end_logits"] = out.end_logits

        for name, pad_id in [("pad_eq_eos", tok.eos_token_id), ("pad_ne_eos", PAD_NOT_EOS)]:
            batch_ids, mask = pad_batch(tok, pad_id)
            seq.config.pad_token_id = pad_id
            out = seq(batch_ids, attention_mask=mask, labels=torch.tensor(BATCH_LABELS))
            # The position transformers pools at, by its own rule, for the reader of the fixture.
            non_pad = (batch_ids != pad_id).int()
            pooled_at = (torch.arange(batch_ids.shape[-1]) * non_pad).argmax(-1)
            tensors[f"seq.{name}.logits"] = out.logits
            meta["seq"]["batches"][name] = {
                "pad_token_id": pad_id,
                "input_ids": batch_ids.tolist(),
                "attention_mask": mask.tolist(),
                "labels": BATCH_LABELS,
                "pooled_at": pooled_at.tolist(),
                "loss": float(out.loss),
            }

    # Gradients of the LM loss (labels = input_ids), float32, dropout off.
    lm.zero_grad()
    lm(ids, labels=ids).loss.backward()
    for k, v in grads(lm, LM_GRAD_PARAMS, "transformer.").items():
        tensors[f"grad.lm.{k}"] = v
    meta["grad"] = {"lm": LM_GRAD_PARAMS, "wte_rows": WTE_ROWS, "seq": SEQ_GRAD_PARAMS}
    # Gradients of the classification loss on the padded batch (pad = eos): through the pooling.
    batch_ids, mask = pad_batch(tok, tok.eos_token_id)
    seq.config.pad_token_id = tok.eos_token_id
    seq.zero_grad()
    seq(batch_ids, attention_mask=mask, labels=torch.tensor(BATCH_LABELS)).loss.backward()
    params = dict(seq.named_parameters())
    for name in SEQ_GRAD_PARAMS:
        key = name if name.startswith("score") else "transformer." + name
        tensors[f"grad.seq.{name}"] = params[key].grad.contiguous()

    hf_written(fixtures / "heads-hf-written", tensors, meta)

    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    safetensors.torch.save_file(tensors, fixtures / "heads.safetensors", metadata={"format": "pt"})
    (fixtures / "heads.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {len(tensors)} tensors to {fixtures}/heads.safetensors and heads.json")


def hf_written(out_dir: pathlib.Path, tensors, meta):
    """A sequence-classification checkpoint saved by transformers itself, small enough to commit:
    its `score.weight` sits at the top level beside `transformer.*`."""
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=1000, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=999, eos_token_id=999, pad_token_id=999, num_labels=3)
    model = GPT2ForSequenceClassification(cfg).eval()
    with torch.no_grad():
        model.score.weight.normal_(0.0, 0.5)
    model.save_pretrained(out_dir)
    ids = torch.tensor([[1, 5, 42, 7, 999, 999], [3, 4, 999, 999, 999, 999]])
    with torch.no_grad():
        tensors["hf_written.logits"] = model(ids).logits
    meta["hf_written"] = {"input_ids": ids.tolist(), "num_labels": 3}


if __name__ == "__main__":
    main()

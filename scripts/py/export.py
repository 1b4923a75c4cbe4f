"""Export a trained checkpoint as a Hugging Face-layout ONNX model folder (offline tool).

Writes config.json, generation_config.json, tokenizer.json, tokenizer_config.json and onnx/model.onnx
(fp32, one graph for prefill and decode with a KV cache, I/O named as Optimum/transformers.js
exports name them). onnx/model_q4.onnx is made afterwards by our own TypeScript quantizer
(scripts/quantize-model.ts), not here.
    /usr/bin/python3 scripts/py/export.py --ckpt /tmp/wl-train/best.pt --out public/models/<name>
    /usr/bin/python3 scripts/py/export.py --random --cfg tiny --out /tmp/tiny   # untrained, for tooling tests
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import bpe  # noqa: E402
from model import Config, LlamaForCausalLM  # noqa: E402

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}:\n{{ message['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:\n{% endif %}"
)


class OnnxWrapper(LlamaForCausalLM):
    """Same module tree (so scope names read /model/layers.0/self_attn/q_proj/MatMul), flat KV I/O."""

    def forward(self, input_ids, attention_mask, position_ids, *past_flat):
        L = self.c.num_hidden_layers
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(L)]
        logits, presents = super().forward(input_ids, attention_mask, position_ids, past)
        return (logits, *[t for kv in presents for t in kv])


def export_onnx(model, path):
    c = model.c
    L = c.num_hidden_layers
    B, T, P = 1, 3, 2
    ids = torch.randint(0, c.vocab_size, (B, T))
    mask = torch.ones(B, P + T, dtype=torch.long)
    pos = torch.arange(P, P + T)[None]
    past = []
    for _ in range(L):
        past += [torch.randn(B, c.num_key_value_heads, P, c.head_dim), torch.randn(B, c.num_key_value_heads, P, c.head_dim)]
    in_names = ["input_ids", "attention_mask", "position_ids"]
    out_names = ["logits"]
    dyn = {"input_ids": {0: "batch_size", 1: "sequence_length"},
           "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
           "position_ids": {0: "batch_size", 1: "sequence_length"},
           "logits": {0: "batch_size", 1: "sequence_length"}}
    for i in range(L):
        for kv in ("key", "value"):
            n = f"past_key_values.{i}.{kv}"
            in_names.append(n)
            dyn[n] = {0: "batch_size", 2: "past_sequence_length"}
            o = f"present.{i}.{kv}"
            out_names.append(o)
            dyn[o] = {0: "batch_size", 2: "total_sequence_length"}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    wrapped = OnnxWrapper(c)
    wrapped.load_state_dict(model.state_dict())
    wrapped.eval()
    torch.onnx.export(wrapped, (ids, mask, pos, *past), path, input_names=in_names,
                      output_names=out_names, dynamic_axes=dyn, opset_version=17, do_constant_folding=True)


def write_package(out, model, tok, meta):
    write_package_json(out, model, tok, meta)
    export_onnx(model, os.path.join(out, "onnx", "model.onnx"))


def write_package_json(out, model, tok, meta):
    """config.json, generation_config.json, tokenizer.json, tokenizer_config.json (no ONNX file)."""
    c = model.c
    os.makedirs(out, exist_ok=True)
    eot = tok.eot_id
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "head_dim": c.head_dim,
        "max_position_embeddings": c.max_position_embeddings, "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta, "hidden_act": "silu", "tie_word_embeddings": True,
        "attention_bias": False, "mlp_bias": False, "bos_token_id": eot, "eos_token_id": eot,
        "torch_dtype": "float32", "use_cache": True, "transformers_version": "4.46.0",
    }
    config.update(meta)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": eot, "eos_token_id": eot, "do_sample": False, "max_length": 512}, f, indent=2)
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok.hf_json(), f, ensure_ascii=False)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bpe.EOT, "eos_token": bpe.EOT,
                   "unk_token": None, "pad_token": bpe.EOT, "add_bos_token": False, "add_eos_token": False,
                   "clean_up_tokenization_spaces": False, "model_max_length": c.max_position_embeddings,
                   "chat_template": CHAT_TEMPLATE}, f, indent=2)


TINY = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt")
    ap.add_argument("--merges", default="/tmp/wl-train/merges.json")
    ap.add_argument("--random", action="store_true")
    ap.add_argument("--cfg", default="tiny")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    tok = bpe.Tokenizer(bpe.load_merges(args.merges))
    if args.random:
        from train import MODEL_CFG
        model = LlamaForCausalLM(Config(**(TINY if args.cfg == "tiny" else MODEL_CFG)))
    else:
        ck = torch.load(args.ckpt)
        model = LlamaForCausalLM(Config(**ck["cfg"]))
        model.load_state_dict(ck["state"])
    model.eval()
    write_package(args.out, model, tok, {})
    print("wrote", args.out)


if __name__ == "__main__":
    main()

"""PyTorch oracle for per-token routing gates over concatenated LoRA adapters (MeteoRA-style; offline tool).

The gated forward (src/model/inject-gates.ts, src/train/gate-model.ts): in every decoder layer l a gate
    g_l = softmax(ln1_l @ W_l^T + b_l)            ln1_l = input_layernorm(x_l) (what q/k/v read), (T, n)
weights the n experts (stored PEFT adapters, each with its static mix weight w_i) token by token on every
adapted projection of that layer:
    y = x @ W^T + sum_i g_l[:, i] * w_i * s_i * (x @ A_i^T) @ B_i^T        (s_i = lora_alpha / r)
Weights come from onnx/model.onnx of the default model (initializers mapped by node name into
scripts/py/model.py), experts from public/adapters/weblora-shout and -romeo (mix weights 1 and 0.5),
gate weights random (seeded). Everything in float64, stored as F32:
    tokens            [33]     golden seq2 tokens (tests/fixtures/golden.safetensors)
    logits            [33, V]  gated forward
    batch             [2, 16]  seq2[:16], seq2[16:32]
    loss              [1]      mean next-token cross-entropy over batch[:, :-1] -> batch[:, 1:]
    layers.{l}.gate.weight [n, C], layers.{l}.gate.bias [n]          the gate (torch Linear layout)
    grad.layers.{l}.gate.weight, grad.layers.{l}.gate.bias          d loss / d gate parameters
    /usr/bin/python3 scripts/py/gate_fixtures.py --out tests/fixtures/gates.safetensors
"""
import argparse
import json
import os
import struct
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from fixtures import module_path, sha256, write_safetensors  # noqa: E402
from model import Config, LlamaForCausalLM, LoraLinear  # noqa: E402

MODEL = "public/models/weblora-shakespeare"
EXPERTS = [("weblora-shout", 1.0), ("weblora-romeo", 0.5)]
SEED = 1234


def read_st(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    dt = {"F32": torch.float32, "I32": torch.int32}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        a, b = info["data_offsets"]
        buf = bytearray(raw[8 + n + a:8 + n + b])
        out[key] = torch.frombuffer(buf, dtype=dt[info["dtype"]]).reshape(info["shape"]).clone()
    return out


def load_model(model_dir):
    import onnx
    from onnx import numpy_helper
    cfg_json = json.load(open(os.path.join(model_dir, "config.json")))
    c = Config(**{k: cfg_json[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                          "num_attention_heads", "num_key_value_heads", "rms_norm_eps",
                                          "rope_theta")})
    m = onnx.load(os.path.join(model_dir, "onnx", "model.onnx"))
    init = {t.name: torch.tensor(numpy_helper.to_array(t).copy()) for t in m.graph.initializer}
    model = LlamaForCausalLM(c)
    sd = model.state_dict()
    for k in sd:
        if k in init:
            sd[k] = init[k]
    for node in m.graph.node:
        if node.op_type != "MatMul" or not node.name.startswith("/model/layers."):
            continue
        parts = node.name.split("/")  # ['', 'model', 'layers.3', 'self_attn', 'q_proj', 'MatMul']
        key = f"model.{parts[2]}.{parts[3]}.{parts[4]}.weight"
        if key in sd and node.input[1] in init:
            sd[key] = init[node.input[1]].t().contiguous()  # MatMul (in, out) -> Linear (out, in)
    model.load_state_dict(sd)
    return model.double().eval(), c


def gated_forward(lin, x):
    y = F.linear(x, lin.weight)
    for i, (a, b, s) in enumerate(lin.experts):
        y = y + lin.gate[..., i:i + 1] * s * F.linear(F.linear(x, a), b)
    return y


def install_gates(model, experts, gates):
    """experts: per module path a list of (A, B, scale*weight); gates: per layer (W [n, C], b [n])."""
    LoraLinear.forward = gated_forward
    for i, layer in enumerate(model.model.layers):
        norm = layer.input_layernorm
        lins = [lin for li, _t, lin in model.modules_by_target() if li == i]
        w, b = gates[i]

        def norm_hook(_mod, _inp, out, lins=lins, w=w, b=b):
            g = torch.softmax(F.linear(out, w, b), dim=-1)
            for lin in lins:
                lin.gate = g
            return out

        norm.register_forward_hook(norm_hook)
    for li, t, lin in model.modules_by_target():
        lin.experts = experts[module_path(li, t)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=MODEL)
    ap.add_argument("--adapters", default="public/adapters")
    ap.add_argument("--out", default="tests/fixtures/gates.safetensors")
    args = ap.parse_args()
    torch.manual_seed(SEED)
    model, c = load_model(args.model_dir)
    experts = {}
    for name, weight in EXPERTS:
        d = os.path.join(args.adapters, name)
        cfg = json.load(open(os.path.join(d, "adapter_config.json")))
        assert not cfg["rank_pattern"] and not cfg["alpha_pattern"] and not cfg["use_rslora"]
        st = read_st(os.path.join(d, "adapter_model.safetensors"))
        s = cfg["lora_alpha"] / cfg["r"]
        for li, t, _lin in model.modules_by_target():
            key = module_path(li, t)
            a = st[f"base_model.model.{key}.lora_A.weight"].double()
            b = st[f"base_model.model.{key}.lora_B.weight"].double()
            experts.setdefault(key, []).append((a, b, s * weight))
    n, C = len(EXPERTS), c.hidden_size
    gen = torch.Generator().manual_seed(SEED)
    gates = []
    for _ in range(c.num_hidden_layers):
        w = (torch.randn(n, C, generator=gen) * (2.0 / C ** 0.5)).double().requires_grad_(True)
        b = (torch.randn(n, generator=gen) * 0.5).double().requires_grad_(True)
        gates.append((w, b))
    install_gates(model, experts, gates)

    golden = read_st(os.path.join(os.path.dirname(args.out), "golden.safetensors"))
    seq = golden["seq2.tokens"].long()
    with torch.no_grad():
        logits, _ = model(seq[None])
    batch = torch.stack([seq[:16], seq[16:32]])
    lg, _ = model(batch)
    loss = F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), batch[:, 1:].reshape(-1))
    loss.backward()
    out = {"tokens": seq.int(), "logits": logits[0].float(), "batch": batch.int(),
           "loss": loss.detach().float().reshape(1)}
    for i, (w, b) in enumerate(gates):
        out[f"layers.{i}.gate.weight"] = w.detach().float()
        out[f"layers.{i}.gate.bias"] = b.detach().float()
        out[f"grad.layers.{i}.gate.weight"] = w.grad.float()
        out[f"grad.layers.{i}.gate.bias"] = b.grad.float()
    meta = {"format_version": "1", "torch_version": torch.__version__,
            "model_sha256": sha256(os.path.join(args.model_dir, "onnx", "model.onnx")),
            "experts": json.dumps([{"name": nm, "weight": wt} for nm, wt in EXPERTS]),
            "loss_f64": repr(loss.item()), "generator": "scripts/py/gate_fixtures.py"}
    size = write_safetensors(args.out, out, meta)
    print(f"wrote {args.out} ({size} bytes), loss {loss.item():.6f}")


if __name__ == "__main__":
    main()

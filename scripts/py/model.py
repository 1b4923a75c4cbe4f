"""The weblora default model: a Llama-family decoder written out in plain PyTorch.

Module names mirror Hugging Face's LlamaForCausalLM (model.layers.{i}.self_attn.q_proj, ...), so
state-dict keys, exported ONNX scope names and PEFT adapter keys all match what users' tools expect.
Features: RMSNorm, rotary embeddings (rotate-half form), SwiGLU MLP, grouped-query attention,
tied input/output embeddings, a KV cache. Forward takes/returns the HF ONNX I/O contract:
(input_ids, attention_mask, position_ids, past) -> (logits, present).
LoRA support here is only for the oracle (tests/fixtures): `lora` maps a module path to
(A [r, in], B [out, r], scale) exactly as PEFT stores them, output += scale * B(A x).
"""
import math
import torch
import torch.nn as nn
import torch.nn.functional as F

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Config:
    def __init__(self, **kw):
        self.vocab_size = kw.get("vocab_size", 1024)
        self.hidden_size = kw.get("hidden_size", 256)
        self.intermediate_size = kw.get("intermediate_size", 704)
        self.num_hidden_layers = kw.get("num_hidden_layers", 6)
        self.num_attention_heads = kw.get("num_attention_heads", 8)
        self.num_key_value_heads = kw.get("num_key_value_heads", 4)
        self.max_position_embeddings = kw.get("max_position_embeddings", 512)
        self.rms_norm_eps = kw.get("rms_norm_eps", 1e-5)
        self.rope_theta = kw.get("rope_theta", 10000.0)
        self.dropout = kw.get("dropout", 0.0)

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + self.eps) * self.weight


class LoraLinear(nn.Linear):
    """nn.Linear (no bias) with an optional PEFT-style LoRA branch attached for the oracle."""

    def __init__(self, i, o):
        super().__init__(i, o, bias=False)
        self.lora = None  # (A [r, in], B [out, r], scale)

    def forward(self, x):
        y = F.linear(x, self.weight)
        if self.lora is not None:
            a, b, s = self.lora
            y = y + s * F.linear(F.linear(x, a), b)
        return y


def rope(x, cos, sin):
    # x: (B, H, T, D); cos/sin: (B, 1, T, D); rotate-half convention as in HF Llama
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    rot = torch.cat((-x2, x1), dim=-1)
    return x * cos + rot * sin


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        hd = c.head_dim
        self.q_proj = LoraLinear(c.hidden_size, c.num_attention_heads * hd)
        self.k_proj = LoraLinear(c.hidden_size, c.num_key_value_heads * hd)
        self.v_proj = LoraLinear(c.hidden_size, c.num_key_value_heads * hd)
        self.o_proj = LoraLinear(c.num_attention_heads * hd, c.hidden_size)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, cos, sin, mask, past_k, past_v):
        c = self.c
        B, T, _ = x.shape
        hd, nh, nkv = c.head_dim, c.num_attention_heads, c.num_key_value_heads
        q = self.q_proj(x).view(B, T, nh, hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, nkv, hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, nkv, hd).transpose(1, 2)
        q = rope(q, cos, sin)
        k = rope(k, cos, sin)
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        present = (k, v)
        rep = nh // nkv
        S = k.shape[2]
        kk = k[:, :, None, :, :].expand(B, nkv, rep, S, hd).reshape(B, nh, S, hd)
        vv = v[:, :, None, :, :].expand(B, nkv, rep, S, hd).reshape(B, nh, S, hd)
        att = torch.matmul(q, kk.transpose(2, 3)) * (1.0 / math.sqrt(hd))
        att = att + mask
        att = torch.softmax(att, dim=-1)
        att = self.drop(att)
        y = torch.matmul(att, vv).transpose(1, 2).reshape(B, T, nh * hd)
        return self.o_proj(y), present


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = LoraLinear(c.hidden_size, c.intermediate_size)
        self.up_proj = LoraLinear(c.hidden_size, c.intermediate_size)
        self.down_proj = LoraLinear(c.intermediate_size, c.hidden_size)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, cos, sin, mask, pk, pv):
        a, present = self.self_attn(self.input_layernorm(x), cos, sin, mask, pk, pv)
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.post_attention_layernorm(x)))
        return x, present


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([Layer(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, input_ids, cos, sin, mask, past):
        x = self.embed_tokens(input_ids)
        presents = []
        for i, layer in enumerate(self.layers):
            pk, pv = (None, None) if past is None else past[i]
            x, pr = layer(x, cos, sin, mask, pk, pv)
            presents.append(pr)
        return self.norm(x), presents


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Inner(c)
        inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2).float() / c.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)
        self.apply(self._init)
        for n, p in self.named_parameters():
            if n.endswith("o_proj.weight") or n.endswith("down_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.num_hidden_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past=None):
        """past: list of (k, v) per layer, each (B, n_kv, P, head_dim), or None."""
        c = self.c
        B, T = input_ids.shape
        P = 0 if past is None else past[0][0].shape[2]
        if position_ids is None:
            position_ids = torch.arange(P, P + T).unsqueeze(0).expand(B, T)
        if attention_mask is None:
            attention_mask = torch.ones(B, P + T, dtype=torch.long)
        freqs = position_ids.to(torch.float32)[:, :, None] * self.inv_freq[None, None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]
        # additive mask (B, 1, T, S): causal within the window + padding from attention_mask
        S = P + T
        qpos = torch.arange(T)[:, None] + P
        kpos = torch.arange(S)[None, :]
        allowed = (kpos <= qpos)[None, None] & (attention_mask[:, None, None, :] > 0)
        mask = torch.where(allowed, torch.zeros((), dtype=torch.float32), torch.full((), -1e9))
        x, presents = self.model(input_ids, cos, sin, mask, past)
        logits = torch.matmul(x, self.model.embed_tokens.weight.t())
        return logits, presents

    def modules_by_target(self):
        """Yields (layer index, module name, LoraLinear) for the 7 LoRA targets."""
        for i, layer in enumerate(self.model.layers):
            for t in TARGETS:
                parent = layer.self_attn if t.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else layer.mlp
                yield i, t, getattr(parent, t)

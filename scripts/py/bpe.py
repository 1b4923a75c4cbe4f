"""Byte-level BPE tokenizer: trainer, encoder, and writer of a Hugging Face tokenizer.json.

Why our own: PyPI is not reachable here, so the `tokenizers` trainer is not available offline.
The file we write is a plain HF `BPE` model with the `ByteLevel` pre-tokenizer and decoder, the
same layout GPT-2 uses, so @huggingface/tokenizers and transformers.js load it with no special
casing. The pre-tokenizer regex below is GPT-2's with \\p{L}/\\p{N} narrowed to ASCII; this is
exact for the training corpus (pure ASCII) and irrelevant at run time, where the JS tokenizer
applies the real Unicode regex.
"""
import json
import re
from collections import Counter

EOT = "<|endoftext|>"
# GPT-2 split pattern, ASCII form (see module docstring).
PAT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENC = bytes_to_unicode()


def pieces(text):
    for m in PAT.finditer(text):
        yield "".join(BYTE_ENC[b] for b in m.group(0).encode("utf-8"))


def train(text, vocab_size):
    """Greedy BPE: repeatedly merge the most frequent adjacent pair (ties: lexicographically smallest)."""
    words = Counter(pieces(text))
    segs = {w: list(w) for w in words}
    merges = []
    n_merges = vocab_size - 256 - 1  # 256 byte tokens + 1 special
    for _ in range(n_merges):
        pairs = Counter()
        for w, c in words.items():
            s = segs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], [-ord(ch) for ch in kv[0][0] + "\0" + kv[0][1]]))[0]
        merges.append(best)
        joined = best[0] + best[1]
        for w in words:
            s = segs[w]
            if len(s) < 2:
                continue
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == best[0] and s[i + 1] == best[1]:
                    out.append(joined)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            segs[w] = out
    return merges


class Tokenizer:
    def __init__(self, merges):
        self.merges = merges
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.vocab = {BYTE_ENC[b]: b for b in range(256)}
        for i, (a, b) in enumerate(merges):
            self.vocab[a + b] = 256 + i
        self.eot_id = len(self.vocab)
        self.vocab_size = self.eot_id + 1
        self.inv = {v: k for k, v in self.vocab.items()}
        self.byte_dec = {c: b for b, c in BYTE_ENC.items()}
        self.cache = {}

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        s = list(word)
        while len(s) > 1:
            best, best_rank = None, None
            for i in range(len(s) - 1):
                r = self.ranks.get((s[i], s[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best is None:
                break
            s = s[:best] + [s[best] + s[best + 1]] + s[best + 2 :]
        ids = [self.vocab[t] for t in s]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        out = []
        for p in pieces(text):
            out.extend(self.bpe(p))
        return out

    def decode(self, ids):
        s = "".join(self.inv[i] for i in ids if i != self.eot_id)
        return bytes(self.byte_dec[c] for c in s).decode("utf-8", errors="replace")

    def hf_json(self):
        special = {"id": self.eot_id, "content": EOT, "single_word": False, "lstrip": False,
                   "rstrip": False, "normalized": False, "special": True}
        vocab = dict(self.vocab)
        vocab[EOT] = self.eot_id
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [special],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {
                "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                "vocab": vocab, "merges": [[a, b] for a, b in self.merges],
            },
        }


def save_merges(path, merges):
    with open(path, "w") as f:
        json.dump(merges, f)


def load_merges(path):
    with open(path) as f:
        return [tuple(m) for m in json.load(f)]

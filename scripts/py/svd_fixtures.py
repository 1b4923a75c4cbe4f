"""SVD oracle for rank truncation (src/adapters/truncate.ts), from the FULL matrices, independently of the
factored path the TypeScript takes: for every module of the example adapters (public/adapters/weblora-*),
ΔW = scale * lora_B @ lora_A in float64 (scale = lora_alpha / r; these adapters have no patterns or
rsLoRA, asserted), torch.linalg.svd of ΔW, and for k = 1, 2, 4 the best rank-k ΔW_k (Eckart-Young):
  sv       all singular values above 0 (the first r)
  err[k]   ||ΔW - ΔW_k||_F, checked here to equal tail[k] = sqrt(sum_{i>k} sigma_i^2)
  fro[k]   ||ΔW_k||_F
  probe[k] y_p^T ΔW_k x_p for p = 0..3, x_p[j] = sin(0.37 (j+1)(p+1)), y_p[o] = cos(0.23 (o+1)(p+1))
  vec[k]   ΔW_k @ x_0 (full vector; layer-0 modules of weblora-shout only, to keep the file small)
Writes tests/fixtures/svd-oracle.json (format_version, torch version, sha256 of each adapter file).
Offline tool only:  /usr/bin/python3 scripts/py/svd_fixtures.py --adapters public/adapters --out tests/fixtures
"""
import argparse
import hashlib
import json
import math
import os
import struct

import numpy as np
import torch

FORMAT_VERSION = "1"
KS = [1, 2, 4]
NAMES = ["weblora-shout", "weblora-romeo", "weblora-reverse"]


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        assert info["dtype"] == "F32", info["dtype"]
        a, b = info["data_offsets"]
        out[key] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(info["shape"]).astype(np.float64)
    return out


def probes(n, p, f, c):
    return np.array([f(c * (j + 1) * (p + 1)) for j in range(n)], dtype=np.float64)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapters", default="public/adapters")
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    torch.set_num_threads(2)
    result = {"format_version": FORMAT_VERSION, "torch": torch.__version__, "ks": KS, "adapters": {}}
    for name in NAMES:
        folder = os.path.join(args.adapters, name)
        cfg = json.load(open(os.path.join(folder, "adapter_config.json")))
        assert not cfg.get("rank_pattern") and not cfg.get("alpha_pattern") and not cfg.get("use_rslora")
        scale = cfg["lora_alpha"] / cfg["r"]
        st_path = os.path.join(folder, "adapter_model.safetensors")
        tensors = read_safetensors(st_path)
        modules = {}
        for key in sorted(tensors):
            if not key.endswith("lora_A.weight"):
                continue
            path = key[len("base_model.model."):-len(".lora_A.weight")]
            parts = path.split(".")
            layer, module = int(parts[2]), parts[-1]
            A = torch.from_numpy(tensors[key])
            B = torch.from_numpy(tensors[key.replace("lora_A", "lora_B")])
            dW = scale * (B @ A)  # (out, in), float64
            U, S, Vh = torch.linalg.svd(dW, full_matrices=False)
            r = A.shape[0]
            rec = {"sv": S[:r].tolist(), "err": {}, "tail": {}, "fro": {}, "probe": {}}
            for k in KS:
                dWk = (U[:, :k] * S[:k]) @ Vh[:k]
                err = torch.linalg.norm(dW - dWk).item()
                tail = math.sqrt(float((S[k:] ** 2).sum()))
                assert abs(err - tail) <= 1e-9 * max(1.0, tail), (name, path, k, err, tail)
                rec["err"][k] = err
                rec["tail"][k] = tail
                rec["fro"][k] = torch.linalg.norm(dWk).item()
                pr = []
                for p in range(4):
                    x = torch.from_numpy(probes(dW.shape[1], p, math.sin, 0.37))
                    y = torch.from_numpy(probes(dW.shape[0], p, math.cos, 0.23))
                    pr.append((y @ dWk @ x).item())
                rec["probe"][k] = pr
                if name == "weblora-shout" and layer == 0:
                    x0 = torch.from_numpy(probes(dW.shape[1], 0, math.sin, 0.37))
                    rec.setdefault("vec", {})[k] = [float(f"{v:.9g}") for v in (dWk @ x0).tolist()]
            modules[f"{layer}.{module}"] = rec
        result["adapters"][name] = {"sha256": sha256(st_path), "modules": modules}
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "svd-oracle.json")
    with open(out, "w") as f:
        json.dump(result, f, separators=(",", ":"))
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()

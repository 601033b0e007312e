#!/usr/bin/env python3
"""Torch peer of `cargo bench --bench select` (run it on the GPU machine, where PyTorch is installed).

Computes the per-tensor GMT thresholds on the Llama-3.2-1B shapes (146 tensors, ~1.24B f32 entries)
the way GMT code does it today, and times it:
  - topk:     torch.topk(|g|.flatten(), k).values[-1] per tensor (k = n - floor(r*n));
  - kthvalue: torch.kthvalue(|g|.flatten(), n - k + 1).values per tensor.
The gradients are the integer-hash data of `select_demo --data hash`, regenerated bit for bit, so
`--compare ours.json` (written by `select_demo --data hash --json ours.json`) checks that every
threshold and kept count equals gradmask's.

Usage: python3 scripts/peers/torch_select.py [--scale 1] [--mask-ratio 0.2] [--compare ours.json]
"""
import argparse
import json
import math
import time

from llama_shapes import llama_1b_shapes


def mix32(x):
    """tests/common/mod.rs::mix32 on an int64 array (numpy or torch): wrapping products, low 32 bits."""
    h = (x * 0x9E3779B1) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def hash_bits(index):
    """The f32 bit pattern (as int64 in [0, 2^32)) of hash-data entry `index` (int64 array)."""
    a, b = mix32(2 * index), mix32(2 * index + 1)
    return (b & 0x80000000) | ((100 + a % 40) << 23) | (b & 0x7FFFFF)


def hash_tensor(torch, offset, n, device):
    bits = hash_bits(torch.arange(offset, offset + n, dtype=torch.int64, device=device))
    bits = bits - (bits >= 2**31).to(torch.int64) * 2**32  # wrap into int32 range
    return bits.to(torch.int32).view(torch.float32)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--mask-ratio", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", help="ours.json from select_demo --data hash --json")
    args = parser.parse_args()

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = llama_1b_shapes(args.scale)
    grads, offset = [], 0
    for _, n in shapes:
        grads.append(hash_tensor(torch, offset, n, device))
        offset += n
    total = offset
    print(f"torch {torch.__version__} on {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}): "
          f"{len(shapes)} tensors, {total} f32 entries, mask ratio {args.mask_ratio}")
    targets = [n - math.floor(args.mask_ratio * n) for _, n in shapes]

    def per_tensor(method):
        out = []
        for g, k in zip(grads, targets):
            a = g.abs().flatten()
            if method == "topk":
                out.append(torch.topk(a, k).values[-1])
            else:
                out.append(torch.kthvalue(a, a.numel() - k + 1).values)
        return out

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    results = {}
    for method in ["topk", "kthvalue"]:
        try:
            per_tensor(method)  # warm-up
            times = []
            for _ in range(args.repeats):
                sync()
                start = time.perf_counter()
                thresholds = per_tensor(method)
                sync()
                times.append(time.perf_counter() - start)
            results[method] = thresholds
            best = min(times)
            print(f"{method}: best {best * 1e3:.1f} ms, median {sorted(times)[len(times) // 2] * 1e3:.1f} ms "
                  f"({total * 4 / best / 1e9:.1f} GB/s of gradients)")
        except RuntimeError as e:  # e.g. out of memory on a very large k
            print(f"{method}: failed: {e}")

    if args.compare:
        with open(args.compare) as f:
            ours = json.load(f)
        assert ours["mask_ratio"] == args.mask_ratio, "mask ratios differ"
        mismatches = 0
        for method, thresholds in results.items():
            for (name, n), g, t, mine in zip(shapes, grads, thresholds, ours["tensors"]):
                assert mine["name"] == name and mine["len"] == n, f"shape mismatch at {name}"
                bits = int(t.view(torch.int32).item()) & 0x7FFFFFFF
                kept = int((g.abs() >= t).sum().item())
                if bits != mine["threshold_bits"] or kept != mine["kept"]:
                    mismatches += 1
                    print(f"MISMATCH {method} {name}: torch bits {bits} kept {kept}, "
                          f"gradmask bits {mine['threshold_bits']} kept {mine['kept']}")
        print(f"compare: {mismatches} mismatches over {len(results)} methods x {len(shapes)} tensors")
        if mismatches:
            raise SystemExit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Torch peer of `cargo bench --bench step` (run it on the GPU machine, where PyTorch is installed).

Times one optimizer step on the Llama-3.2-1B shapes (146 tensors, ~1.24B f32 parameters; `--scale`
divides every length), f32 parameters and gradients:
  - gmt:   the GMT step as PyTorch code does it today: per tensor, the threshold of |g| by
           torch.topk (or torch.kthvalue with --method kthvalue), the mask |g| >= threshold applied
           to the gradient, then torch.optim.AdamW(fused=True).step();
  - plain: torch.optim.AdamW(fused=True).step() alone;
  - copy:  a device-to-device copy of the gradient bytes, for scale.
GB/s counts 32 B per parameter for gmt and 28 B for plain (gradmask's counting), and bytes read plus
written for the copy. The gradients keep a raw copy, and each gmt step masks it into .grad afresh,
so every step selects on the same unmasked data.

Needs only torch (no network). Usage:
  python3 scripts/peers/torch_step.py [--scale 1] [--mask-ratio 0.2] [--iters 10] [--method topk]
"""
import argparse
import math
import time

from llama_shapes import llama_1b_shapes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=1, help="divide every tensor length by this")
    parser.add_argument("--mask-ratio", type=float, default=0.2)
    parser.add_argument("--iters", type=int, default=10, help="timed steps per case (after 2 warm-up steps)")
    parser.add_argument("--method", choices=["topk", "kthvalue"], default="topk")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("torch_step.py needs a CUDA device (torch.optim.AdamW(fused=True) on GPU)")
    device = torch.device("cuda")
    shapes = llama_1b_shapes(args.scale)
    total = sum(n for _, n in shapes)
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}: {len(shapes)} tensors, "
          f"{total} f32 parameters, mask ratio {args.mask_ratio}, threshold by {args.method}")

    gen = torch.Generator(device=device)
    gen.manual_seed(7)
    params, raw = [], []
    for _, n in shapes:
        params.append(torch.nn.Parameter(torch.empty(n, device=device).uniform_(-1, 1, generator=gen)))
        # Log-normal magnitudes with a random sign, like tests/common llama_gradients.
        g = torch.randn(n, device=device, generator=gen).mul_(2.0).sub_(10.0).exp_()
        g.mul_(torch.randint(0, 2, (n,), device=device, generator=gen).mul_(2).sub_(1))
        raw.append(g)
    targets = [n - math.floor(args.mask_ratio * n) for _, n in shapes]

    def gmt_masks():
        for p, g, k in zip(params, raw, targets):
            a = g.abs()
            if k == 0:
                threshold = math.inf
            elif k == a.numel() or args.mask_ratio == 0.0:
                threshold = 0.0
            elif args.method == "topk":
                threshold = torch.topk(a, k, sorted=False).values.min()
            else:
                threshold = torch.kthvalue(a, a.numel() - k + 1).values
            p.grad = g * (a >= threshold)

    def plain_grads():
        for p, g in zip(params, raw):
            p.grad = g

    def timed(name, fn, bytes_per_step):
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.iters):
            fn()
        torch.cuda.synchronize()
        secs = (time.perf_counter() - start) / args.iters
        print(f"  {name:<22} {secs * 1e3:9.3f} ms  {bytes_per_step / secs * 1e-9:7.1f} GB/s")
        return secs

    src = torch.empty(total, device=device)
    dst = torch.empty_like(src)
    copy = timed("copy_dtod", lambda: dst.copy_(src), 8 * total)
    del src, dst

    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay, fused=True)

    def plain_step():
        plain_grads()
        opt.step()

    def gmt_step():
        gmt_masks()
        opt.step()

    plain = timed("plain fused AdamW", plain_step, 28 * total)
    gmt = timed(f"GMT ({args.method} + AdamW)", gmt_step, 32 * total)
    print(f"  plain AdamW: {100 * (28 * total / plain) / (8 * total / copy):.1f}% of the copy's GB/s; "
          f"GMT step / plain step: {gmt / plain:.2f}x")


if __name__ == "__main__":
    main()

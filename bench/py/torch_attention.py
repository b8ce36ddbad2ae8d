# The best attention PyTorch offers on this GPU, for `npm run bench:gpu` (bench/gpu.ts): times
# F.scaled_dot_product_attention under each SDPA backend (flash, cuDNN, memory-efficient) and,
# when installed, FlashAttention-3 (flash_attn_interface) and FlashAttention-2 (flash_attn), for
# bf16 [1, H, L, D] shapes given as JSON in argv[1]; prints one JSON object with the fastest.
import json
import sys

import torch
import torch.nn.functional as F


def time_ms(fn, iters=10, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def candidates(q, k, v, causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue

        def run(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        yield f"sdpa {name.lower()}", run
    qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # [B, L, H, D] for flash-attn
    try:
        from flash_attn_interface import flash_attn_func as fa3

        yield "flash-attn 3", lambda: fa3(qt, kt, vt, causal=causal)
    except ImportError:
        pass
    try:
        from flash_attn import flash_attn_func as fa2

        yield "flash-attn 2", lambda: fa2(qt, kt, vt, causal=causal)
    except ImportError:
        pass


def main():
    shapes = json.loads(sys.argv[1])
    rows = []
    for s in shapes:
        h, length, d, causal = s["H"], s["L"], s["D"], s["causal"]
        q, k, v = (torch.randn(1, h, length, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        best = None
        for name, fn in candidates(q, k, v, causal):
            try:
                ms = time_ms(fn)
            except RuntimeError:
                continue  # backend not available for this shape or GPU
            if best is None or ms < best[1]:
                best = (name, ms)
        if best is not None:
            rows.append({**s, "backend": best[0], "ms": best[1]})
        del q, k, v
        torch.cuda.empty_cache()
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "rows": rows}))


main()

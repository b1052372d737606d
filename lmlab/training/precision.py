"""``precision: auto``: train in mixed bfloat16 where this machine's bfloat16 path is faster, float32 elsewhere.

Mixed bfloat16 keeps float32 master weights, optimizer state and loss (Keras' ``mixed_bfloat16``
policy); only the layers' products run in bfloat16. Whether that is faster depends on the hardware
and on the size of the model's matrices, so ``auto`` decides from what it finds, and says why:

- an accelerator with bfloat16 units (a TPU; an NVIDIA GPU of compute capability 8.0 or later):
  bfloat16;
- a CPU without bfloat16 instructions (neither AMX-BF16 nor AVX512-BF16): float32;
- JAX on a CPU: float32 (XLA's CPU backend computes bfloat16 products in float32);
- TensorFlow on a CPU with them: float32 for a model under ``SMALL_WIDTH`` wide (its casts cost
  more than its small products save: bench/RESULTS.md measured a 128-wide GPT-2 step at 35 ms in
  float32 and 53-63 ms in bfloat16); otherwise a measurement of the model's own largest product
  (batch tokens x width x 4 width) on the path each precision would run on (float32 with XLA,
  bfloat16 as a TensorFlow graph, see ``lmlab.training.steps.use_xla``), bfloat16 when it is at
  least ``MARGIN`` times as fast.

The choice is made once, when a run starts, and saved in its config, so a resume trains on in
the same precision.
"""

from __future__ import annotations

import time

import keras

SMALL_WIDTH = 256
MARGIN = 1.15  # bfloat16 must win clearly: a near tie is not worth the rounding
CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bfloat16_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """Which of the bfloat16 instruction sets (``CPU_FLAGS``) this CPU has; empty when it has none or we can't tell."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.partition(":")[2].split())
                    return [flag for flag in CPU_FLAGS if flag in flags]
    except OSError:
        pass
    return []


def accelerator_bfloat16() -> str | None:
    """A description of the accelerator with bfloat16 units the backend will use, or None."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "tpu":
            return "a TPU"
        if device.platform == "gpu":
            capability = getattr(device, "compute_capability", None)
            if capability is None or float(capability) >= 8.0:
                return f"a GPU ({device.device_kind})"
        return None
    if backend == "tensorflow":
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            if tuple(details.get("compute_capability", (0, 0))) >= (8, 0):
                return f"a GPU ({details.get('device_name', gpu.name)})"
    return None


def time_products(tokens: int, width: int, repeats: int = 10) -> tuple[float, float]:
    """Best seconds of a ``(tokens, width) @ (width, 4 width)`` product: float32 with XLA, bfloat16 as a graph."""
    import tensorflow as tf

    a = tf.random.uniform((tokens, width))
    b = tf.random.uniform((width, 4 * width))
    best = {}
    for dtype, xla in (("float32", True), ("bfloat16", False)):
        x, y = tf.cast(a, dtype), tf.cast(b, dtype)
        product = tf.function(lambda p, q: tf.reduce_sum(tf.matmul(p, q)[:1, :1]), jit_compile=xla)
        product(x, y).numpy()  # compile
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            product(x, y).numpy()
            times.append(time.perf_counter() - start)
        best[dtype] = min(times)
    return best["float32"], best["bfloat16"]


def resolve_precision(requested: str, width: int, tokens: int) -> tuple[str, str]:
    """``(precision, why)`` for a model ``width`` wide trained on batches of ``tokens`` tokens."""
    if requested != "auto":
        return requested, "as configured"
    accelerator = accelerator_bfloat16()
    if accelerator:
        return "mixed_bfloat16", f"auto: {accelerator} with bfloat16 units"
    flags = cpu_bfloat16_flags()
    if not flags:
        return "float32", "auto: this CPU has no bfloat16 instructions (neither AMX-BF16 nor AVX512-BF16)"
    backend = keras.backend.backend()
    if backend != "tensorflow":
        return "float32", f"auto: {backend} on a CPU (XLA's CPU backend computes bfloat16 products in float32)"
    if width < SMALL_WIDTH:
        return "float32", (f"auto: the CPU has {', '.join(flags)}, but the model is {width} wide; under "
                           f"{SMALL_WIDTH}, bfloat16's casts cost more than its products save")
    tokens = max(1, min(tokens, 8192))
    float32_s, bfloat16_s = time_products(tokens, width)
    measured = (f"a {tokens}x{width}x{4 * width} product took {bfloat16_s * 1e3:.2f} ms in bfloat16 and "
                f"{float32_s * 1e3:.2f} ms in float32 on this CPU ({', '.join(flags)})")
    if bfloat16_s * MARGIN <= float32_s:
        return "mixed_bfloat16", f"auto: {measured}"
    return "float32", f"auto: {measured}; bfloat16 is not {MARGIN}x faster"

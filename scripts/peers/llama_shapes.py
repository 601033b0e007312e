"""The Llama-3.2-1B tensor shapes shared by the torch peers (mirrors tests/common/mod.rs)."""


def llama_1b_shapes(scale):
    """The shapes of tests/common/mod.rs::llama_1b_shapes, in the same order."""
    d, kv, mlp, vocab = 2048, 512, 8192, 128256
    shapes = [("embed_tokens", vocab * d)]
    for layer in range(16):
        for name, n in [("input_layernorm", d), ("q_proj", d * d), ("k_proj", d * kv), ("v_proj", d * kv),
                        ("o_proj", d * d), ("post_attention_layernorm", d), ("gate_proj", d * mlp),
                        ("up_proj", d * mlp), ("down_proj", mlp * d)]:
            shapes.append((f"layers.{layer}.{name}", n))
    shapes.append(("norm", d))
    return [(name, -(-n // scale)) for name, n in shapes]

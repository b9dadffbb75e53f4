"""LoRA on a WanBackbone through peft, the way diffusers' Wan transformer takes adapters (PeftAdapterMixin):
the base weights frozen, low-rank A/B matrices beside the chosen linear layers trained.

An adapter's checkpoint holds its own tensors only (`is_adapter_key`); the base it applies to is recorded
beside it (apt/training/run_folder.py rebuilds it). An export either merges the adapter into the weights
(`merged`) or writes it as a diffusers LoRA file that `WanPipeline.load_lora_weights` loads (`save_lora_file`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from apt.core.config import ConfigError

# torch and peft are imported inside the functions: a command's --help reads LoRAConfig without them.

# The linear layers of every WanTransformerBlock: self- and cross-attention projections and the FFN (the
# names diffusers' Wan LoRAs use). Modulation tables, norms, embeddings and the output head stay full.
WAN_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
ADAPTER = "default"  # peft's adapter name
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' name: load_lora_weights(folder) finds it


@dataclass
class LoRAConfig:
    """model.lora: train a low-rank adapter of the generator instead of all its weights (0 = off)."""

    rank: int = 0  # adapter rank r; 0 trains every weight (the paper)
    alpha: float = 0.0  # scale alpha / r of the adapter's output; 0 = r (scale 1)
    targets: list[str] = field(default_factory=lambda: list(WAN_TARGETS))  # module names the adapter wraps

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    def validate(self):
        if self.rank < 0 or self.alpha < 0:
            raise ConfigError(f"model.lora.rank and model.lora.alpha must be >= 0, got {self.rank} and {self.alpha}")
        if self.enabled and not self.targets:
            raise ConfigError("model.lora.targets: name at least one module (e.g. to_q)")

    def as_dict(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha or self.rank, "targets": list(self.targets)}


def add_lora(backbone, cfg: LoRAConfig | dict, seed: int = 0) -> None:
    """Wrap `backbone`'s target layers with a fresh adapter (B = 0: the output is unchanged) and make it the
    only trainable part."""
    import torch
    from peft import LoraConfig

    cfg = LoRAConfig(**cfg) if isinstance(cfg, dict) else cfg
    names = {name.rsplit(".", 1)[-1] for name, _ in backbone.model.named_modules()}
    full = {name for name, _ in backbone.model.named_modules()}
    missing = [t for t in cfg.targets if t not in names and not any(n.endswith(f".{t}") for n in full)]
    if missing:
        raise ConfigError(f"model.lora.targets {missing} name no module of this transformer (Wan's: {WAN_TARGETS})")
    backbone.model.requires_grad_(False)
    # A's random init: the same on every rank (FSDP2 keeps each rank's shard of its own copy) and in every
    # run, without moving the global generator the rest of the run draws from
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone.model.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha or cfg.rank,
                                              target_modules=cfg.targets, init_lora_weights=True), adapter_name=ADAPTER)
    for name, p in backbone.model.named_parameters():
        p.requires_grad_(is_adapter_key(name))
    backbone.lora = cfg.as_dict()  # what a checkpoint and an export record about it


def is_adapter_key(name: str) -> bool:
    """A state-dict key of an adapter tensor (peft's lora_A / lora_B weights)."""
    return ".lora_A." in name or ".lora_B." in name


def has_lora(backbone) -> bool:
    return getattr(backbone, "lora", None) is not None


def merged(backbone):
    """A WanBackbone with the adapter folded into the base weights (`backbone` is left as it was)."""
    import copy

    from apt.models.backbone import WanBackbone

    model = copy.deepcopy(backbone.model)
    model.fuse_lora(adapter_names=[ADAPTER])
    model.unload_lora()
    return WanBackbone(model)


def save_lora_file(backbone, folder: str | Path, dtype=None) -> Path:
    """The adapter as a diffusers LoRA folder (LORA_FILE with its rank/alpha metadata), for
    `WanPipeline.load_lora_weights(folder)` on the base model's folder."""
    import torch
    from diffusers import WanPipeline
    from peft.utils import get_peft_model_state_dict

    dtype = dtype or torch.float32  # the file's dtype (the adapter trains in float32)
    layers = {k: v.detach().to("cpu", dtype).contiguous()
              for k, v in get_peft_model_state_dict(backbone.model, adapter_name=ADAPTER).items()}
    config = backbone.model.peft_config[ADAPTER]
    metadata = {k: v for k, v in config.to_dict().items() if k in ("r", "lora_alpha", "target_modules")}
    metadata["target_modules"] = sorted(metadata["target_modules"])
    WanPipeline.save_lora_weights(folder, transformer_lora_layers=layers, weight_name=LORA_FILE,
                                  transformer_lora_adapter_metadata=metadata, safe_serialization=True)
    return Path(folder) / LORA_FILE


def describe(cfg: dict | None) -> str:
    return "full weights" if not cfg else f"LoRA rank {cfg['rank']} (alpha {cfg['alpha']:g})"


"""Convert a published reward checkpoint, once and offline, into what `kind: clip` loads.

    apt-convert-reward --kind hps --checkpoint HPS_v2.1_compressed.pt --tokenizer checkpoints/clip-vit-large-patch14 \\
        --out checkpoints/HPSv2.1                         # then: {kind: clip, path: checkpoints/HPSv2.1}
    apt-convert-reward --kind aesthetic --checkpoint sac+logos+ava1-l14-linearMSE.pth --out checkpoints/aesthetic.safetensors
        # then: {kind: clip, path: checkpoints/clip-vit-large-patch14, head: checkpoints/aesthetic.safetensors}

Checkpoints are read as tensors only (no code runs). `hps` writes a transformers CLIP folder (ViT-H-14,
or the architecture in --clip-config, a JSON of CLIPConfig keys) with the tokenizer you give (the OpenAI CLIP
BPE); `aesthetic` writes the MLP head as safetensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from apt.core.command import console_script, run_command
from apt.core.config import ConfigError, option, parse_command


@dataclass
class ConvertRewardConfig:
    kind: str = option("", "what to convert", choices=("hps", "aesthetic"))
    checkpoint: str = option("", "the published checkpoint (.pt, .pth or .safetensors; required)")
    out: str = option("", "hps: the CLIP folder to write; aesthetic: the head file (required)")
    tokenizer: str = option("", "hps: a folder with the OpenAI CLIP tokenizer (vocab.json, merges.txt)")
    clip_config: str = option("", "hps: a JSON of CLIPConfig keys when the checkpoint is not ViT-H-14")

    def validate(self):
        if not self.kind or not self.checkpoint or not self.out:
            raise ConfigError("give the kind (hps or aesthetic), --checkpoint and --out")
        if self.kind == "hps" and not self.tokenizer:
            raise ConfigError("hps: give --tokenizer, a folder with the OpenAI CLIP tokenizer files")


def convert(cfg: ConvertRewardConfig) -> int:
    from apt.rewards.convert import convert_aesthetic, convert_open_clip

    try:
        if cfg.kind == "hps":
            config = json.loads(Path(cfg.clip_config).read_text()) if cfg.clip_config else None
            out = convert_open_clip(cfg.checkpoint, cfg.tokenizer, cfg.out, config)
        else:
            out = convert_aesthetic(cfg.checkpoint, cfg.out)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None
    print(json.dumps({"converted": cfg.kind, "out": str(out)}))
    return 0


def main(argv=None) -> int:
    return run_command(lambda: convert(parse_command(ConvertRewardConfig, argv, __doc__, prog="apt-convert-reward")))


cli = console_script(main)

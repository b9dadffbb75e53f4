"""A prompt stream for the rewards, apart from the real clips' captions (adv.reward_prompts): alignment
trained on prompts that have no video. The file is read and embedded once at start-up; each micro-batch
draws its prompts uniformly with the rank's RNG (seeded per data-parallel rank and checkpointed, so a
context-parallel group draws the same and a resumed run the same)."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with # skipped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"adv.reward_prompts: no prompts file at {path} (one prompt per line)")
    prompts = [line.strip() for line in path.read_text().splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"adv.reward_prompts: {path} holds no prompt")
    return prompts


class PromptStream:
    def __init__(self, prompts: list[str], text: torch.Tensor):
        """prompts and their embeddings (N, L, D), kept on the CPU."""
        self.prompts, self.text = prompts, text

    @classmethod
    def from_file(cls, path: str | Path, encoder, chunk: int = 32, show: bool = True) -> PromptStream:
        """The file's prompts embedded by the model's text encoder (apt.models.text), `chunk` at a time."""
        prompts = read_prompts(path)
        parts = [encoder.encode(prompts[i : i + chunk]).cpu()
                 for i in tqdm(range(0, len(prompts), chunk), desc="embed reward prompts", disable=not show)]
        return cls(prompts, torch.cat(parts))

    def draw(self, n: int, device: torch.device) -> tuple[torch.Tensor, list[str]]:
        index = torch.randint(len(self.prompts), (n,))
        return self.text[index].to(device), [self.prompts[i] for i in index.tolist()]

"""Text encoder wrapper: tokenise, encode, zero the padding, exactly as diffusers' WanPipeline does.

Matching WanPipeline token for token matters: an exported folder must give the same video
in diffusers' own pipeline as in ours.
"""

from __future__ import annotations

import html
import re

import torch


def clean_prompt(text: str) -> str:
    """WanPipeline's prompt_clean without ftfy (a no-op on plain text): unescape, squeeze spaces."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


class TextEncoder(torch.nn.Module):
    def __init__(self, tokenizer, encoder: torch.nn.Module, max_tokens: int):
        super().__init__()
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.tokenizer, self.encoder, self.max_tokens = tokenizer, encoder, max_tokens

    @property
    def dim(self) -> int:
        return self.encoder.config.d_model

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer([clean_prompt(p) for p in prompts], padding="max_length", max_length=self.max_tokens,
                               truncation=True, add_special_tokens=True, return_attention_mask=True,
                               return_tensors="pt")
        return batch.input_ids, batch.attention_mask

    def forward_tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, D) states with the padding positions zeroed (differentiable: used to train it)."""
        dev = next(self.encoder.parameters()).device
        states = self.encoder(ids.to(dev), mask.to(dev)).last_hidden_state
        return states * mask.to(dev)[..., None].to(states.dtype)

    @torch.no_grad()
    def encode(self, prompts: str | list[str]) -> torch.Tensor:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return self.forward_tokens(*self.tokenize(prompts)).float()

"""The toy world's text-video alignment reward: a small contrastive model (video encoder + word
encoder) trained on training-split toy clips and captions by apt/toy/train_reward.py and shipped in
apt/assets/toy-reward/.

It shares nothing with the evaluator that scores the results table (apt/toy/evaluator.py): another
architecture (a per-frame 2D encoder with a soft-argmax trajectory, not a 3D CNN), its own training
code, its own augmentation and its own clips, so that a generator that pleases it has to draw what
the caption says, not what one network happens to read. Its score is the cosine of the clip's and
the caption's embeddings, or (the default) the log-probability the model gives the caption among
every caption the toy world has (its retrieval task): higher is better, differentiable in the pixels.
The cosine of a clip showing the wrong digit is still high (colour and motion agree); the
log-probability is where the digit decides.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from apt.core.files import save_safetensors
from apt.toy.world import COLOUR_NAMES, DIGIT_WORDS, DIRECTION_NAMES, caption

REWARD_DIR = Path(__file__).resolve().parent.parent / "assets" / "toy-reward"
# Every word a toy caption can hold; anything else reads as <unk>.
VOCAB = ("<unk>", *sorted({w for text in (*COLOUR_NAMES, *DIGIT_WORDS, *DIRECTION_NAMES, "a moving")
                           for w in text.split()}))


# Every caption of the toy world: moving clips and still images.
ALL_CAPTIONS = tuple(caption(d, c, m) for d in range(len(DIGIT_WORDS)) for c in range(len(COLOUR_NAMES))
                     for m in [*range(len(DIRECTION_NAMES)), None])


def words(text: str) -> list[int]:
    index = {w: i for i, w in enumerate(VOCAB)}
    return [index.get(w, 0) for w in re.findall(r"[a-z]+", text.lower())] or [0]


class FrameEncoder(nn.Module):
    """One frame -> what is drawn (max-pooled features) and where (a soft-argmax position in [-1, 1]^2)."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, padding=1), nn.GELU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),
        )
        self.where = nn.Conv2d(width, 1, 1)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the toy's glyphs are 8x8 bitmaps drawn at 16 px: half resolution keeps all of them, at a quarter the cost
        h = self.body(F.avg_pool2d(frames, 2))  # (N, C, H/8, W/8)
        n, _, gh, gw = h.shape
        attn = self.where(h).flatten(1).softmax(-1).view(n, gh, gw)
        ys, xs = torch.linspace(-1, 1, gh, device=h.device), torch.linspace(-1, 1, gw, device=h.device)
        pos = torch.stack([(attn.sum(1) * xs).sum(-1), (attn.sum(2) * ys).sum(-1)], dim=-1)
        return h.amax((2, 3)), pos


class ToyAlignmentModel(nn.Module):
    def __init__(self, width: int = 64, dim: int = 64):
        super().__init__()
        self.config = dict(width=width, dim=dim)
        self.frames = FrameEncoder(width)
        self.video_head = nn.Sequential(nn.Linear(2 * width + 4, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.word_embedding = nn.Embedding(len(VOCAB), dim)
        self.text_head = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.logit_scale = nn.Parameter(torch.tensor(2.6593))  # log(1 / 0.07), CLIP's start

    def embed_videos(self, videos: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> unit vectors (B, dim)."""
        b, f = videos.shape[0], videos.shape[2]
        look, pos = self.frames(rearrange(videos.clamp(-1, 1), "b c f h w -> (b f) c h w"))
        look, pos = look.view(b, f, -1), pos.view(b, f, 2)
        motion = torch.cat([pos[:, -1] - pos[:, 0], pos.mean(1)], dim=-1)
        return F.normalize(self.video_head(torch.cat([look.amax(1), look.mean(1), motion], dim=-1)), dim=-1)

    def embed_captions(self, captions: list[str]) -> torch.Tensor:
        """Captions -> unit vectors (B, dim): the mean of their word embeddings, projected."""
        device = self.word_embedding.weight.device
        rows = [self.word_embedding(torch.tensor(words(c), device=device)).mean(0) for c in captions]
        return F.normalize(self.text_head(torch.stack(rows)), dim=-1)

    def forward(self, videos: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """Cosine similarity (B,) of each clip with its caption."""
        return (self.embed_videos(videos) * self.embed_captions(captions)).sum(-1)

    def caption_table(self) -> torch.Tensor:
        """The embeddings of ALL_CAPTIONS (540, dim), without gradient: the candidates of caption_log_prob."""
        with torch.no_grad():
            return self.embed_captions(list(ALL_CAPTIONS))

    def caption_log_prob(self, videos: torch.Tensor, captions: list[str], table: torch.Tensor | None = None
                         ) -> torch.Tensor:
        """log p(caption | clip) (B,) among ALL_CAPTIONS, at the model's learned temperature. `table`:
        caption_table(), if the caller keeps it (a frozen model's never changes)."""
        index = {c: i for i, c in enumerate(ALL_CAPTIONS)}
        unknown = [c for c in captions if c not in index]
        if unknown:
            raise ValueError(f"the toy reward scores toy-world captions only, got {unknown[0]!r}")
        table = self.caption_table() if table is None else table
        logits = self.logit_scale.exp().clamp(max=100) * self.embed_videos(videos) @ table.T
        rows = torch.tensor([index[c] for c in captions], device=logits.device)
        return logits.log_softmax(-1).gather(1, rows[:, None])[:, 0]


def save_reward_model(model: ToyAlignmentModel, out_dir: str | Path) -> Path:

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()}, out_dir / "model.safetensors")
    (out_dir / "config.json").write_text(json.dumps(model.config, indent=2) + "\n")
    return out_dir


@functools.lru_cache(maxsize=2)
def load_reward_model(model_dir: str | Path = REWARD_DIR) -> ToyAlignmentModel:
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    if not (model_dir / "model.safetensors").exists():
        raise FileNotFoundError(f"no toy reward model in {model_dir}; build it with: "
                                f"python scripts/build_toy.py --component reward")
    model = ToyAlignmentModel(**json.loads((model_dir / "config.json").read_text()))
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    return model.eval().requires_grad_(False)


SCORES = ("log_prob", "cosine", "digit_colour", "frame_consistency", "read_caption", "read_every_window")


def _digit_colour(text: str) -> str:
    """The caption without its motion: 'a red seven moving up' -> 'a red seven'."""
    return text.split(" moving ")[0]


WINDOW = 5  # frames read_every_window reads at a time: the model reads 5-frame runs of real clips 96% right

# Every caption's (digit, colour) group, in the order of the still captions
GROUPS = tuple(dict.fromkeys(_digit_colour(c) for c in ALL_CAPTIONS))


class ToyAlignmentReward(nn.Module):
    """A reward (apt/rewards/base.py) over the shipped toy model; `score`:
    - "log_prob" (the default): log p(caption | clip) among every toy caption;
    - "cosine": cosine(clip, caption);
    - "digit_colour": log p(the caption's digit and colour | clip), the caption probabilities summed over
      motions; with per_frame: min and window: 5, the prompt's digit asked of every part of the clip (the
      model reads clips: it reads single frames badly, 5-frame windows of real clips 96% right);
    - "frame_consistency": the cosine between each frame's glyph features (the model's frame encoder,
      position-free) and the clip's mean, pooled over frames by `pool` (mean, or min: the worst frame):
      the same glyph in every frame, prompt-free (the temporal term: log_prob asks for the right
      digit, but max-pools it over frames);
    - "read_caption", "read_every_window": 0/1 and without gradient, for the policy objectives: the model's
      best caption for the clip is the prompt / every run of WINDOW frames reads as the prompt's digit and colour.
    """

    name = "toy_alignment"

    def __init__(self, model_dir: str | Path | None = None, score: str = "log_prob", pool: str = "mean"):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"the toy reward's score is one of {', '.join(SCORES)}, got {score!r}")
        if pool not in ("mean", "min"):
            raise ValueError(f"the toy reward's pool (of frame_consistency) is mean or min, got {pool!r}")
        self.pool = pool
        self.model = load_reward_model(Path(model_dir) if model_dir else REWARD_DIR)
        self.score = score
        self._table: torch.Tensor | None = None  # the frozen model's caption embeddings, computed once
        self.register_buffer("group_of", torch.tensor([GROUPS.index(_digit_colour(c)) for c in ALL_CAPTIONS]),
                             persistent=False)

    def _log_probs(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 540) log p(caption | clip) over ALL_CAPTIONS."""
        if self._table is None or self._table.device != clips.device:
            self._table = self.model.caption_table()
        logits = self.model.logit_scale.exp().clamp(max=100) * self.model.embed_videos(clips) @ self._table.T
        return logits.log_softmax(-1)

    def _group_log_probs(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 60) log p(digit and colour | clip): each group's captions' probabilities summed."""
        log_probs = self._log_probs(clips)
        groups = torch.full((clips.shape[0], len(GROUPS)), float("-inf"), device=clips.device, dtype=log_probs.dtype)
        mask = self.group_of[None, :] == torch.arange(len(GROUPS), device=clips.device)[:, None]  # (60, 540)
        return torch.where(mask[None], log_probs[:, None], groups[..., None]).logsumexp(-1)

    def forward(self, videos: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        model, clips = self.model.to(videos.device), videos.float()
        if self.score == "cosine":
            return model(clips, prompts)
        if self.score == "log_prob":
            if self._table is None or self._table.device != videos.device:
                self._table = model.caption_table()
            return model.caption_log_prob(clips, prompts, self._table)
        if self.score == "frame_consistency":
            b, f = clips.shape[0], clips.shape[2]
            look = F.normalize(model.frames(rearrange(clips, "b c f h w -> (b f) c h w"))[0].view(b, f, -1), dim=-1)
            cosines = (look * F.normalize(look.mean(1), dim=-1)[:, None]).sum(-1)
            return cosines.mean(1) if self.pool == "mean" else cosines.amin(1)
        unknown = [p for p in prompts if _digit_colour(p) not in GROUPS]
        if unknown:
            raise ValueError(f"the toy reward scores toy-world captions only, got {unknown[0]!r}")
        wanted = torch.tensor([GROUPS.index(_digit_colour(p)) for p in prompts], device=videos.device)
        if self.score == "digit_colour":
            return self._group_log_probs(clips).gather(1, wanted[:, None])[:, 0]
        with torch.no_grad():
            if self.score == "read_caption":
                index = {c: i for i, c in enumerate(ALL_CAPTIONS)}
                asked = torch.tensor([index[p] for p in prompts], device=videos.device)
                return (self._log_probs(clips).argmax(-1) == asked).float()
            b, k = clips.shape[0], min(WINDOW, clips.shape[2])
            pieces = rearrange(clips.unfold(2, k, 1), "b c p h w k -> (b p) c k h w")
            read = self._group_log_probs(pieces).argmax(-1).view(b, -1)
            return (read == wanted[:, None]).all(1).float()


def build(spec) -> ToyAlignmentReward:
    """The `toy` reward kind (registered in setup.cfg): `path` is a reward model folder, "" = the shipped one;
    options: {score: ..., pool: ...} (ToyAlignmentReward). The model is float32 (it is tiny)."""
    from apt.core.config import ConfigError
    from apt.rewards.config import unknown_options

    unknown_options(spec, ("score", "pool"))
    if spec.dtype not in ("", "float32"):
        raise ConfigError(f"dtype: the toy reward runs in float32 (it is tiny), got {spec.dtype!r}")
    try:
        return ToyAlignmentReward(spec.path or None, **spec.options)
    except FileNotFoundError as err:
        raise ConfigError(f"path: {err}") from None
    except ValueError as err:
        raise ConfigError(f"options: {err}") from None

"""The one adapter over diffusers' WanTransformer3DModel. Nothing else touches its internals.

Generator, teacher and discriminator all call it. It splits the model's forward into
`embed` (patchify, rotary, time/text conditioning), the block list and `head` (modulated norm,
projection, unpatchify), so the discriminator can stop after its deepest tap and the per-model
parallelize function can shard and checkpoint block by block.

Time is t in [0, 1] here (rectified flow); diffusers' Wan expects [0, 1000]: converted in `embed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from apt.core.collectives import gather_along

WAN_TIME_SCALE = 1000.0


@dataclass
class Embedded:
    """What every block needs besides the token states."""

    tokens: torch.Tensor  # (B, N, D) visual tokens
    text: torch.Tensor  # (B, L, D) projected text tokens
    temb: torch.Tensor  # (B, D) time embedding, used by the head
    timestep_proj: torch.Tensor  # (B, 6, D) per-block modulation input
    rotary: tuple[torch.Tensor, torch.Tensor]  # rotary embeddings (cos, sin)
    grid: tuple[int, int, int]  # token grid (frames, height, width) after patchify


def default_taps(num_blocks: int) -> tuple[int, ...]:
    """The paper's taps 16/26/36 of 36 blocks as fractions 4/9, 13/18, 1 of depth (1-based)."""
    taps = sorted({max(1, round(num_blocks * f)) for f in (4 / 9, 13 / 18, 1.0)})
    return tuple(taps)


class WanBackbone(torch.nn.Module):
    def __init__(self, model: WanTransformer3DModel):
        super().__init__()
        if not isinstance(model, WanTransformer3DModel):
            raise TypeError(f"WanBackbone wraps a diffusers WanTransformer3DModel, got {type(model).__name__}")
        if model.config.image_dim is not None:
            raise ValueError("image-conditioned Wan (I2V) is not supported: expected a text-to-video transformer")
        self.model = model
        # Recompute each block in backward (set by apt.training.distributed.parallelize_backbone).
        self.activation_checkpointing = False
        # The ranks one sample's tokens are split over (enable_context_parallel); None: not split.
        self.context_parallel_group = None
        self.context_parallel_ranks = 1

    @classmethod
    def from_pretrained(cls, path: str | Path, subfolder: str | None = "transformer",
                        torch_dtype: torch.dtype = torch.float32) -> "WanBackbone":
        return cls(WanTransformer3DModel.from_pretrained(path, subfolder=subfolder, torch_dtype=torch_dtype))

    @classmethod
    def empty_from_config(cls, path: str | Path, subfolder: str | None = "transformer",
                          device: torch.device | str = "cpu") -> "WanBackbone":
        """The architecture of a folder's transformer with uninitialised float32 parameters, for
        weights that come from elsewhere (a training checkpoint): nothing is read from the folder's
        weight files and nothing is randomly initialised (at 14B that is about 57 GB read and minutes
        of init saved)."""
        return cls.empty(WanTransformer3DModel.load_config(path, subfolder=subfolder), device)

    @classmethod
    def empty(cls, config: dict, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
              ) -> "WanBackbone":
        """A WanTransformer3DModel of `config` (its config.json as a dict) with uninitialised parameters
        of `dtype` on `device`. Parameters are built on the meta device and then allocated; buffers are
        built for real, because the rotary tables are non-persistent buffers no checkpoint holds."""
        from accelerate import init_empty_weights

        with init_empty_weights(include_buffers=False):
            model = WanTransformer3DModel.from_config(config)
        for module in model.modules():
            for name, param in list(module._parameters.items()):
                if param is not None and param.is_meta:
                    module._parameters[name] = torch.nn.Parameter(
                        torch.empty(param.shape, dtype=dtype, device=device), requires_grad=param.requires_grad)
        return cls(model.to(device))

    # -- structure ---------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def blocks(self) -> torch.nn.ModuleList:
        return self.model.blocks

    @property
    def num_blocks(self) -> int:
        return len(self.model.blocks)

    @property
    def hidden_dim(self) -> int:
        return self.config.num_attention_heads * self.config.attention_head_dim

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (inputs are cast to it); some tensors stay float32, see `cast`."""
        return self.model.patch_embedding.weight.dtype

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(self.config.patch_size)

    # -- serving -----------------------------------------------------------------------------
    def set_attention_backend(self, name: str) -> None:
        """Route every attention through diffusers' dispatcher backend `name` ("native" = torch
        SDPA, "flash", "xformers", ...); errors name the known backends, or what is not installed."""
        from diffusers.models.attention_dispatch import AttentionBackendName

        known = sorted(b.value for b in AttentionBackendName)
        if name.lower() not in known:
            raise ValueError(f"unknown attention backend {name!r}; diffusers knows: {', '.join(known)}")
        try:
            self.model.set_attention_backend(name.lower())
        except (RuntimeError, ImportError) as err:  # e.g. flash-attn / xformers not installed
            raise RuntimeError(f"attention backend {name!r} is not usable here: {err}") from err

    def enable_context_parallel(self, ulysses_degree: int, ring_degree: int = 1, mesh=None) -> None:
        """Split the token sequence with diffusers' own context parallelism: `embed` keeps this rank's share
        of the tokens and the model's _cp_plan hook the matching rotary tables, attention runs Ulysses
        (all-to-all over heads) and/or ring, and `head` gathers the tokens back
        (apt.core.collectives.gather_along, whose backward is the exact adjoint; diffusers' own gather after
        proj_out passes back only this rank's slice).
        `mesh`: a DeviceMesh with "ring" and "ulysses" dimensions (training: beside "dp"); without one,
        the whole (initialised) default group. Ulysses needs the head count divisible by its degree,
        ring a flash-type backend (native SDPA cannot return the log-sum-exp ring needs: GPUs only)."""
        import torch.distributed as dist
        from diffusers import ContextParallelConfig

        ranks = mesh["ring", "ulysses"].size() if mesh is not None else dist.get_world_size()
        if ulysses_degree * ring_degree != ranks:
            raise ValueError(f"ulysses_degree x ring_degree must equal the {ranks} ranks, got "
                             f"{ulysses_degree} x {ring_degree}")
        heads = self.config.num_attention_heads
        if heads % ulysses_degree:
            raise ValueError(f"Ulysses splits the {heads} attention heads: ulysses_degree {ulysses_degree} "
                             "must divide them (use ring_degree for the rest)")
        if torch.accelerator.device_count() == 0:
            # diffusers picks each rank's device as rank % torch.accelerator.device_count(), which is 0
            # on a CPU-only machine (ZeroDivisionError); on CPU every rank's device is the CPU anyway.
            torch.accelerator.device_count = lambda: 1
        config = ContextParallelConfig(ulysses_degree=ulysses_degree or None, ring_degree=ring_degree or None,
                                       mesh=mesh)
        # diffusers' plan splits the rotary tables (kept), the first block's input (done in `embed`: a
        # checkpointed first block would keep the whole sequence alive through the slice's view) and
        # gathers after proj_out (done in `head`, with the exact adjoint)
        plan = {"rope": self.model._cp_plan["rope"]}
        self.model.enable_parallelism(config=config, cp_plan=plan)
        self.context_parallel_group = config._flattened_mesh.get_group()
        self.context_parallel_ranks = ulysses_degree * ring_degree

    def cast(self, dtype: torch.dtype) -> "WanBackbone":
        """In place, like diffusers' from_pretrained(torch_dtype=dtype): tensors under the model's
        _keep_in_fp32_modules (rotary, time embedding, modulation tables, norms) stay float32.
        A module cast this way computes exactly like a reload of its export in that dtype."""
        keep = self.model._keep_in_fp32_modules or []
        for name, tensor in list(self.model.named_parameters()) + list(self.model.named_buffers()):
            if tensor.is_floating_point() and not any(k in name.split(".") for k in keep):
                tensor.data = tensor.data.to(dtype)
        return self

    def save_pretrained(self, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
        """diffusers-format transformer folder (config.json + safetensors) cast as `cast` does, so the
        float32-kept tensors keep their full precision in the file; self is unchanged."""
        import copy

        WanBackbone(copy.deepcopy(self.model)).cast(dtype).model.save_pretrained(path, safe_serialization=True)

    # -- the three stages --------------------------------------------------------------------
    def embed(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> Embedded:
        """x_t (B, C, F, H, W) latents, t (B,) in [0, 1], text (B, L, text_dim) encoder states."""
        m = self.model
        if x_t.ndim != 5:
            raise ValueError(f"expected latents (B, C, F, H, W), got shape {tuple(x_t.shape)}")
        p_t, p_h, p_w = self.patch_size
        _, _, f, h, w = x_t.shape
        if f % p_t or h % p_h or w % p_w:
            raise ValueError(f"latent grid {f}x{h}x{w} is not divisible by patch size {self.patch_size}")
        count, ranks = (f // p_t) * (h // p_h) * (w // p_w), self.context_parallel_ranks
        if count % ranks:
            raise ValueError(f"context parallelism splits {count} tokens ({f}x{h}x{w} latents) over {ranks} ranks: "
                             "they must divide evenly (change the clip size or parallel.context_parallel)")
        rotary = m.rope(x_t)
        tokens = m.patch_embedding(x_t).flatten(2).transpose(1, 2)
        if self.context_parallel_group is not None:  # this rank's share, as the rotary hook splits the tables
            tokens = tokens.chunk(ranks, dim=1)[torch.distributed.get_rank(self.context_parallel_group)]
        tokens = tokens.contiguous()
        t = torch.as_tensor(t, device=x_t.device).float().expand(x_t.shape[0]) * WAN_TIME_SCALE
        temb, timestep_proj, text_tokens, _ = m.condition_embedder(t, text, None)
        return Embedded(tokens, text_tokens, temb, timestep_proj.unflatten(1, (6, -1)), rotary,
                        (f // p_t, h // p_h, w // p_w))

    def run_block(self, index: int, tokens: torch.Tensor, emb: Embedded) -> torch.Tensor:
        block = self.model.blocks[index]
        if self.activation_checkpointing and torch.is_grad_enabled():
            # non-reentrant: composes with FSDP2 and with inputs that do not require grad
            return checkpoint(block, tokens, emb.text, emb.timestep_proj, emb.rotary, use_reentrant=False)
        return block(tokens, emb.text, emb.timestep_proj, emb.rotary)

    def head(self, tokens: torch.Tensor, emb: Embedded) -> torch.Tensor:
        """Modulated output norm, projection and unpatchify -> velocity (B, C, F, H, W)."""
        m = self.model
        shift, scale = (m.scale_shift_table.to(emb.temb.device) + emb.temb.unsqueeze(1)).chunk(2, dim=1)
        out = (m.norm_out(tokens.float()) * (1 + scale) + shift).type_as(tokens)
        out = m.proj_out(out)
        if self.context_parallel_group is not None:
            out = gather_along(out, 1, self.context_parallel_group)
        (f, h, w), (p_t, p_h, p_w) = emb.grid, self.patch_size
        return rearrange(out, "b (f h w) (pt ph pw c) -> b c (f pt) (h ph) (w pw)", f=f, h=h, w=w, pt=p_t, ph=p_h,
                         pw=p_w)

    # -- composites --------------------------------------------------------------------------
    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Predicted velocity v(x_t, t, text); equals the diffusers model's own forward."""
        emb = self.embed(x_t, t, text)
        tokens = emb.tokens
        for i in range(self.num_blocks):
            tokens = self.run_block(i, tokens, emb)
        return self.head(tokens, emb)

    def features(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                 taps: tuple[int, ...] | list[int]) -> tuple[dict[int, torch.Tensor], Embedded]:
        """Token states after each 1-based block in `taps`; blocks past the deepest tap never run.
        Under context parallelism they are this rank's share of the tokens (not gathered)."""
        taps = sorted(set(int(k) for k in taps))
        if not taps or taps[0] < 1 or taps[-1] > self.num_blocks:
            raise ValueError(f"taps must be 1-based block indices in [1, {self.num_blocks}], got {taps}")
        emb = self.embed(x_t, t, text)
        tokens, out = emb.tokens, {}
        for i in range(taps[-1]):
            tokens = self.run_block(i, tokens, emb)
            if i + 1 in taps:
                out[i + 1] = tokens
        return out, emb

"""Masked Autoencoder (He et al., arXiv 2111.06377) around a timm ViT, for 12-channel SAR.

Shapes: images ``x`` (B, C, H, W); ``L = (H/p)(W/p)`` patches of ``p*p*C`` values each, flattened
pixel-major with channels last (``(B, L, p, p, C)``, the reference's ``nchpwq->nhwpqc``).

- Masking: per sample, ``argsort`` of uniform noise (B, L); the first ``int(L (1 - ratio))`` are kept.
- Encoder: the timm ViT's ``patch_embed``, ``cls_token``, ``blocks`` and ``norm``, on visible tokens
  + CLS; its learned ``pos_embed`` is overwritten with fixed 2D sine-cosine values (frozen).
- Decoder: linear embed, mask tokens, fixed 2D sin-cos position embedding, timm ``Block``s, linear
  prediction of patch pixels.
- Loss: mean squared error per pixel over the masked patches, counting only valid pixels (no-data
  excluded). Optional normalised-pixel targets: ``"patch"`` (He et al.: mean/var of each patch over
  all its pixels and channels) or ``"channel"`` (deviation from the paper: mean/var per patch and
  per channel, so each SAR channel, e.g. VV-VH vs VH, is normalised on its own).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from timm.models.vision_transformer import Block, VisionTransformer

from sarssl.models.pos_embed import sincos_2d
from sarssl.models.task import TrainTask
from sarssl.models.vit import EncoderSpec, count_flops, set_fused_attn

NORM_PIX_MODES = ("patch", "channel")


class MAEOutput(NamedTuple):
    """``loss`` scalar; ``pred`` (B, L, p*p*C) in target units, or None (training: only masked patches are
    predicted); ``mask`` (B, L) with 1 = masked."""

    loss: torch.Tensor
    pred: torch.Tensor | None
    mask: torch.Tensor


class Masking(NamedTuple):
    """Per-sample masking: ``ids_keep`` (B, K) visible patches, ``mask`` (B, L) 1 = masked,
    ``ids_restore`` (B, L) inverse permutation, ``ids_masked`` (B, L - K) masked patches."""

    ids_keep: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor
    ids_masked: torch.Tensor


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p*p*C), patches in row-major order, channels last inside a patch."""
    b, c, h, w = x.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    x = x.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, patch_size: int, channels: int, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, L, p*p*C) -> (B, C, H, W); ``grid`` = (H/p, W/p), square by default."""
    b, n, d = x.shape
    p = patch_size
    if d != p * p * channels:
        raise ValueError(f"patch vectors have {d} values, expected {p}*{p}*{channels}")
    gh, gw = grid if grid is not None else (int(round(n**0.5)),) * 2
    if gh * gw != n:
        raise ValueError(f"{n} patches do not form a {gh}x{gw} grid; pass grid=(rows, cols)")
    x = x.reshape(b, gh, gw, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, gh * p, gw * p)


def random_masking(noise: torch.Tensor, mask_ratio: float) -> Masking:
    """Per-sample masking from noise (B, L): the ``K = int(L (1 - ratio))`` lowest-noise patches stay visible."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    b, n = noise.shape
    keep = int(n * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(b, n, device=noise.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return Masking(ids_shuffle[:, :keep], mask, ids_restore, ids_shuffle[:, keep:])


def _weighted_stats(t: torch.Tensor, w: torch.Tensor | None, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance of ``t`` along ``dim`` counting entries where ``w`` is 1."""
    if w is None:
        return t.mean(dim, keepdim=True), t.var(dim, keepdim=True)
    n = w.sum(dim, keepdim=True)
    mean = (t * w).sum(dim, keepdim=True) / n.clamp_min(1)
    var = ((t - mean) ** 2 * w).sum(dim, keepdim=True) / (n - 1).clamp_min(1)
    return mean, var


def _gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class MAE(nn.Module):
    """Masked autoencoder around a timm ``VisionTransformer`` encoder (see the module docstring).

    Args:
        encoder: timm ViT with one CLS token and a position embedding over CLS + patches.
        decoder_dim, decoder_depth, decoder_heads: decoder width, blocks and heads (paper 512 x 8).
        mask_ratio: fraction of patches masked (0.75).
        norm_pix_loss: normalised-pixel targets; ``norm_pix_mode`` ``"patch"`` or ``"channel"``.
        init_weights: re-initialise like the reference (xavier linears, normal(0.02) tokens).
    """

    def __init__(self, encoder: VisionTransformer, decoder_dim: int = 512, decoder_depth: int = 8,
                 decoder_heads: int = 16, mask_ratio: float = 0.75, norm_pix_loss: bool = False,
                 norm_pix_mode: str = "patch", mlp_ratio: float = 4.0, init_weights: bool = True):
        super().__init__()
        if not isinstance(encoder, VisionTransformer):
            raise TypeError(f"encoder must be a timm VisionTransformer, got {type(encoder).__name__}")
        if encoder.cls_token is None or encoder.num_prefix_tokens != 1 or getattr(encoder, "no_embed_class", False):
            raise ValueError("MAE needs a timm ViT with exactly one CLS token and a position embedding over it")
        if getattr(encoder, "dynamic_img_size", False):
            raise ValueError("MAE needs a fixed image size (create the encoder with dynamic_img_size=False)")
        if norm_pix_mode not in NORM_PIX_MODES:
            raise ValueError(f"norm_pix_mode must be one of {NORM_PIX_MODES}, got {norm_pix_mode!r}")
        if decoder_dim % decoder_heads or decoder_dim % 4:
            raise ValueError(f"decoder_dim {decoder_dim} must be a multiple of 4 and of decoder_heads {decoder_heads}")
        pe = encoder.patch_embed
        self.encoder = encoder
        self.patch_size = int(pe.patch_size[0])
        self.grid = tuple(int(g) for g in pe.grid_size)
        self.in_chans = int(pe.proj.in_channels)
        self.num_patches = self.grid[0] * self.grid[1]
        self.mask_ratio = mask_ratio
        self.norm_pix_loss, self.norm_pix_mode = norm_pix_loss, norm_pix_mode
        dim = encoder.embed_dim

        with torch.no_grad():
            encoder.pos_embed.copy_(sincos_2d(dim, self.grid, cls_token=True).unsqueeze(0))
        encoder.pos_embed.requires_grad_(False)

        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("decoder_pos_embed", sincos_2d(decoder_dim, self.grid, cls_token=True).unsqueeze(0))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_blocks = nn.Sequential(*[
            Block(decoder_dim, decoder_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm)
            for _ in range(decoder_depth)])
        self.decoder_norm = norm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size**2 * self.in_chans)
        set_fused_attn(self, True)
        if init_weights:
            self._init_weights()

    def _init_weights(self) -> None:
        w = self.encoder.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- pieces --------------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        return patchify(x, self.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        return unpatchify(x, self.patch_size, self.in_chans, self.grid)

    def make_noise(self, batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform noise (B, L) for :meth:`forward`'s ``noise`` argument."""
        return torch.rand(batch, self.num_patches, device=device, generator=generator)

    def forward_encoder(self, x: torch.Tensor, ids_keep: torch.Tensor | None) -> torch.Tensor:
        """Visible tokens + CLS through the encoder: (B, 1 + K, D); all tokens when ``ids_keep`` is None."""
        enc = self.encoder
        if x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != (self.grid[0] * self.patch_size,
                                                                    self.grid[1] * self.patch_size):
            raise ValueError(f"MAE input has shape {tuple(x.shape)}, expected (B, {self.in_chans}, "
                             f"{self.grid[0] * self.patch_size}, {self.grid[1] * self.patch_size})")
        t = enc.patch_embed(x)
        if t.ndim == 4:  # NHWC output of some patch embeds
            t = t.flatten(1, 2)
        pos = enc.pos_embed.to(t.dtype)
        t = t + pos[:, 1:]
        if ids_keep is not None:
            t = _gather_tokens(t, ids_keep)
        cls = (enc.cls_token + pos[:, :1]).expand(t.shape[0], -1, -1)
        t = torch.cat([cls.to(t.dtype), t], dim=1)
        t = enc.norm_pre(enc.pos_drop(t))
        t = enc.blocks(t)
        return enc.norm(t)

    def decode_tokens(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """(B, 1 + K, D) encoder output -> (B, L, decoder_dim) normalised decoder tokens, one per patch."""
        y = self.decoder_embed(latent)
        b, k1, d = y.shape
        masks = self.mask_token.to(y.dtype).expand(b, self.num_patches - (k1 - 1), d)
        tokens = _gather_tokens(torch.cat([y[:, 1:], masks], dim=1), ids_restore)
        y = torch.cat([y[:, :1], tokens], dim=1) + self.decoder_pos_embed.to(y.dtype)
        return self.decoder_norm(self.decoder_blocks(y))[:, 1:]

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """(B, 1 + K, D) encoder output -> (B, L, p*p*C) pixel predictions for every patch."""
        return self.decoder_pred(self.decode_tokens(latent, ids_restore))

    def targets(self, x: torch.Tensor, valid: torch.Tensor | None = None, ids: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """(target patches (B, L, p*p*C) fp32, valid weights or None, (mean, std) when normalised).

        ``ids`` (B, M) selects M patches per sample (then every output has M rows instead of L).
        """
        target = self.patchify(x.float())
        w = self.patchify(valid.to(target.dtype)) if valid is not None else None
        if ids is not None:
            target = _gather_tokens(target, ids)
            w = None if w is None else _gather_tokens(w, ids)
        if not self.norm_pix_loss:
            return target, w, None
        if self.norm_pix_mode == "patch":
            mean, var = _weighted_stats(target, w, dim=-1)
        else:  # per patch and channel: (B, L, p*p, C), statistics over the p*p pixels
            shape = (*target.shape[:2], self.patch_size**2, self.in_chans)
            mean, var = _weighted_stats(target.view(shape), None if w is None else w.view(shape), dim=2)
            mean = mean.expand(shape).reshape(target.shape)
            var = var.expand(shape).reshape(target.shape)
        std = (var + 1e-6).sqrt()
        return (target - mean) / std, w, (mean, std)

    def loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
             weights: torch.Tensor | None) -> torch.Tensor:
        """Mean squared error per valid pixel (fp32) of the patches where ``mask`` (B, N) is 1 (all when None).

        ``pred``, ``target`` and ``weights`` (valid pixels, or None) are (B, N, p*p*C).
        """
        if mask is None and weights is None:
            return F.mse_loss(pred.float(), target)
        err = (pred.float() - target) ** 2
        w = weights
        if mask is not None:
            m = mask.unsqueeze(-1).to(err.dtype)
            w = m if w is None else w * m
        n = w.sum() if weights is not None else w.sum() * err.shape[-1]
        return (err * w).sum() / n.clamp_min(1.0)

    def forward(self, x: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, predict_all: bool = False) -> MAEOutput:
        """x (B, C, H, W); noise (B, L) for reproducible masks; valid (B, C, H, W) bool excludes no-data.

        Training predicts only the masked patches (the loss needs nothing else; ``pred`` is None);
        ``predict_all=True`` predicts every patch and returns them as ``pred`` (same loss).
        """
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        if noise is None:
            noise = self.make_noise(x.shape[0], device=x.device)
        elif noise.shape != (x.shape[0], self.num_patches):
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected ({x.shape[0]}, {self.num_patches})")
        if valid is not None and valid.shape != x.shape:
            raise ValueError(f"valid mask has shape {tuple(valid.shape)}, expected {tuple(x.shape)}")
        m = random_masking(noise.to(x.device), ratio)
        tokens = self.decode_tokens(self.forward_encoder(x, m.ids_keep), m.ids_restore)
        if predict_all:
            pred = self.decoder_pred(tokens)
            target, weights, _ = self.targets(x, valid)
            return MAEOutput(self.loss(pred, target, m.mask, weights), pred, m.mask)
        target, weights, _ = self.targets(x, valid, ids=m.ids_masked)
        pred = self.decoder_pred(_gather_tokens(tokens, m.ids_masked))
        return MAEOutput(self.loss(pred, target, None, weights), None, m.mask)


@torch.no_grad()
def reconstruct(model: MAE, x: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Reconstructions for display, in the input's units (norm-pix undone with each patch's own stats).

    Returns a dict of (B, C, H, W) tensors ``reconstruction`` (visible patches from the input,
    masked ones predicted), ``prediction`` (every patch predicted), ``masked_input`` (masked patches
    NaN), and ``mask`` (B, 1, H, W) with 1 = masked, plus the scalar ``loss``.
    """
    was_training = model.training
    model.eval()
    try:
        out = model(x, mask_ratio=mask_ratio, noise=noise, valid=valid, predict_all=True)
        _, _, stats = model.targets(x, valid)
        pred = out.pred.float()
        if stats is not None:
            mean, std = stats
            pred = pred * std + mean
        m = out.mask.unsqueeze(-1)
        patches = model.patchify(x.float())
        recon = patches * (1 - m) + pred * m
        masked = patches.masked_fill(m.bool().expand_as(patches), float("nan"))
        mask_img = model.unpatchify(m.expand(-1, -1, patches.shape[-1]))[:, :1]
        return {"reconstruction": model.unpatchify(recon), "prediction": model.unpatchify(pred),
                "masked_input": model.unpatchify(masked), "mask": mask_img, "loss": out.loss}
    finally:
        model.train(was_training)


def export_encoder_state_dict(mae: MAE) -> dict[str, torch.Tensor]:
    """The encoder's state dict with timm key names (``pos_embed`` holds the sin-cos values incl. CLS slot)."""
    return {k: v.detach().to("cpu").clone() for k, v in mae.encoder.state_dict().items()}


class MaskNoiseDataset(torch.utils.data.Dataset):
    """Adds ``"mask_noise"`` (L,) float32 uniform noise to each sample of ``base``, seeded by ``(seed, epoch, index)``.

    The masks then depend only on the sample, not on the process or worker that loads it, so a run
    on N processes (DDP) masks exactly like one process with the same global batch, and a resumed
    run masks like an uninterrupted one. The engine calls :meth:`set_epoch`; other attributes
    (``norm``...) are read from ``base``.
    """

    def __init__(self, base, num_patches: int, seed: int = 0, key: str = "mask_noise"):
        self.base, self.num_patches, self.seed, self.key, self.epoch = base, int(num_patches), int(seed), key, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        inner = getattr(self.base, "set_epoch", None)
        if callable(inner):
            inner(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        from sarssl.data.multicrop import item_seed

        sample = dict(self.base[index])
        g = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))
        sample[self.key] = torch.rand(self.num_patches, generator=g)
        return sample

    def __getattr__(self, name):
        if name == "base":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.base, name)


class MAEPretrainTask(TrainTask):
    """Engine task (see :mod:`sarssl.models.task`): MAE loss on ``batch["s1"]`` with ``batch["s1_valid"]``.

    When the batch carries ``batch["mask_noise"]`` (B, L) (see :class:`MaskNoiseDataset`) the masks
    come from it; otherwise from the global torch RNG.
    """

    monitor, mode = "loss", "min"  # masked-patch reconstruction error

    def __init__(self, mae: MAE, spec: EncoderSpec | None = None, input_key: str = "s1", valid_key: str = "s1_valid",
                 noise_key: str = "mask_noise"):
        super().__init__()
        self.mae, self.spec, self.input_key, self.valid_key = mae, spec, input_key, valid_key
        self.noise_key = noise_key

    def training_step(self, batch: dict, step_info) -> dict[str, torch.Tensor]:
        if self.input_key not in batch:
            raise KeyError(f"batch has no {self.input_key!r} entry (keys: {sorted(batch)})")
        x = batch[self.input_key]
        valid = batch.get(self.valid_key)
        out = self.mae(x, valid=valid, noise=batch.get(self.noise_key))
        logs = {"loss": out.loss}
        if valid is not None:
            logs["valid_frac"] = valid.float().mean()
        return logs

    def export_encoder(self) -> dict[str, torch.Tensor]:
        return export_encoder_state_dict(self.mae)

    def encoder_spec(self) -> dict | None:
        return None if self.spec is None else self.spec.to_dict()

    def compile_for_training(self) -> None:
        self.mae.compile()


def mae_flops(mae: MAE, mask_ratio: float | None = None) -> dict[str, int]:
    """Forward FLOPs per image: ``encoder`` (visible tokens), ``decoder``, and ``encoder_full`` (all tokens)."""
    ratio = mae.mask_ratio if mask_ratio is None else mask_ratio
    device = next(mae.parameters()).device
    x = torch.zeros(1, mae.in_chans, mae.grid[0] * mae.patch_size, mae.grid[1] * mae.patch_size, device=device)
    noise = torch.rand(1, mae.num_patches, device=device, generator=torch.Generator(device).manual_seed(0))
    ids_keep, _, ids_restore, _ = random_masking(noise, ratio)
    with torch.no_grad():
        latent = mae.forward_encoder(x, ids_keep)
    return {
        "encoder": count_flops(mae.forward_encoder, x, ids_keep),
        "decoder": count_flops(mae.forward_decoder, latent, ids_restore),
        "encoder_full": count_flops(mae.forward_encoder, x, None),
    }


def mae_from_config(config, **kw) -> tuple[MAE, EncoderSpec]:
    """The MAE of a resolved run configuration (:class:`sarssl.profiles.RunConfig` of method ``"mae"``):
    encoder from ``config.model`` (with the section's ``drop_path_rate``), decoder, mask ratio and
    targets from ``config.method_config``. ``kw`` overrides :class:`MAE` arguments (``init_weights``...)."""
    from sarssl.models.vit import EncoderSpec, resolve_name

    if config.method != "mae":
        raise ValueError(f"expected an MAE run configuration, got method {config.method!r}")
    m, c = config.model, config.method_config
    spec = EncoderSpec(resolve_name(m.encoder), patch_size=m.patch_size, img_size=m.img_size)
    args = dict(decoder_dim=c.decoder_dim, decoder_depth=c.decoder_depth, decoder_heads=c.decoder_heads,
                mask_ratio=c.mask_ratio, norm_pix_loss=c.norm_pix_loss, norm_pix_mode=c.norm_pix_mode,
                mlp_ratio=c.decoder_mlp_ratio)
    args.update(kw)
    return MAE(spec.create(drop_path_rate=c.drop_path_rate), **args), spec


def mae_from_profile(profile, **kw) -> tuple[MAE, EncoderSpec]:
    """The MAE of a profile (name or Profile): :func:`mae_from_config` of ``train_config("mae", profile)``."""
    from sarssl.profiles import train_config

    return mae_from_config(train_config("mae", profile), **kw)


def compute_table(profiles=("smoke", "cpu", "gpu", "paper"), mask_ratio: float | None = None):
    """Encoder vs decoder forward GFLOPs per image for each profile's MAE (a ``pandas.DataFrame``).

    Columns: encoder, image size, patch, tokens, visible tokens, decoder (width x depth),
    encoder / decoder / full-encoder GFLOPs, decoder share, and training GFLOPs (~3x forward).
    """
    import pandas as pd

    from sarssl.profiles import train_config

    rows = []
    for name in profiles:
        cfg = train_config("mae", name)
        c = cfg.method_config
        torch.manual_seed(0)
        mae, spec = mae_from_config(cfg, init_weights=False)
        ratio = c.mask_ratio if mask_ratio is None else mask_ratio
        f = mae_flops(mae, ratio)
        enc, dec = f["encoder"] / 1e9, f["decoder"] / 1e9
        rows.append({
            "profile": name, "encoder": spec.name, "img_size": spec.img_size, "patch": spec.patch_size,
            "tokens": mae.num_patches, "visible": int(mae.num_patches * (1 - ratio)),
            "decoder": f"{c.decoder_dim}x{c.decoder_depth}",
            "encoder_GFLOPs": enc, "decoder_GFLOPs": dec, "full_encoder_GFLOPs": f["encoder_full"] / 1e9,
            "decoder_share": dec / (enc + dec), "train_GFLOPs": 3 * (enc + dec),
        })
        del mae
    return pd.DataFrame(rows)

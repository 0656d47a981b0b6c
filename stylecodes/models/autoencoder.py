"""The StyleCodes attention autoencoder: SigLIP hidden states -> 20-dim style latent -> style map.

The encoder squeezes the image tokens into one learned query by cross-attention and projects it to the latent that
becomes the stylecode. The decoder expands a latent back into a feature map at the UNet's mid-block resolution: one
learned target token per map position (told apart only by the sinusoidal positions) attends to the latent through a
small transformer decoder. That map seeds the control stream of `StyleCodesControlModel`.

Parameter names follow the published checkpoint (`sref_autoencoder.*` there), so its weights load unchanged.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn


class SinusoidalPositions(nn.Module):
    """Adds the fixed sine/cosine position table of "Attention Is All You Need" to a token sequence.

    The table is a persistent buffer `pe` of shape (1, max_len, d_model) because the published checkpoint stores it.
    """

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"`d_model` must be even for sine/cosine positions, got {d_model}.")
        position = torch.arange(max_len, dtype=torch.float32)[:, None]  # (max_len, 1)
        inverse_frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        angles = position * inverse_frequency  # (max_len, d_model / 2)
        table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # interleaved: sin, cos, sin, cos, ...
        self.register_buffer("pe", table[None], persistent=True)  # (1, max_len, d_model)

    def forward(self, tokens: Tensor) -> Tensor:  # (B, T, d_model)
        return tokens + self.pe[:, : tokens.shape[1]]


class StyleAutoencoder(ModelMixin, ConfigMixin):
    """Attention autoencoder between SigLIP hidden states and the 20-dim style latent.

    Defaults are the published SD1.5 model: SigLIP-base tokens (768 wide), a 512-wide model with 4 heads (the
    release kept the original code's default head count), 3 cross-attention layers in the encoder, a 2-layer
    decoder with torch's default 2048-wide feed-forward, and a map as wide as SD1.5's mid block (1280).
    """

    @register_to_config
    def __init__(
        self,
        input_dim: int = 768,
        output_dim: int = 1280,
        d_model: int = 512,
        num_heads: int = 4,
        num_layers: int = 3,
        latent_dim: int = 20,
        decoder_layers: int = 2,
        max_len: int = 5000,
        feedforward_dim: int = 2048,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"`d_model` ({d_model}) must be divisible by `num_heads` ({num_heads}).")
        self.pos_encoder = SinusoidalPositions(d_model, max_len)
        # Encoder: project tokens, then refine one learned query by repeated cross-attention over them.
        self.input_proj = nn.Linear(input_dim, d_model)
        self.latent_init = nn.Parameter(torch.randn(1, d_model))
        self.attention_layers = nn.ModuleList(
            nn.MultiheadAttention(d_model, num_heads, batch_first=True) for _ in range(num_layers)
        )
        self.latent_proj = nn.Linear(d_model, latent_dim)
        self.latent_norm = nn.LayerNorm(latent_dim)
        # Decoder: one learned target token per map position, attending to the latent as a 1-token memory.
        self.latent_to_d_model = nn.Linear(latent_dim, d_model)
        self.tgt_init = nn.Parameter(torch.randn(1, d_model))
        layer = nn.TransformerDecoderLayer(d_model, num_heads, dim_feedforward=feedforward_dim, batch_first=True)
        self.transformer_decoder = nn.TransformerDecoder(layer, num_layers=decoder_layers)
        self.output_proj = nn.Linear(d_model, output_dim)
        # Inference-only here: start in eval mode so the decoder's dropout (torch's default 0.1) never fires.
        self.eval()

    def encode(self, hidden_states: Tensor) -> Tensor:
        """(B, 196, input_dim) image-encoder hidden states -> (B, latent_dim) style latent, before quantisation."""
        self._check_hidden_states(hidden_states)
        batch = hidden_states.shape[0]
        tokens = self.pos_encoder(self.input_proj(hidden_states))  # (B, T, d_model)
        query = self.latent_init.expand(batch, -1)[:, None]  # (B, 1, d_model)
        # Each layer's output replaces the query: no residual and no norm, exactly as the release was trained.
        for attention in self.attention_layers:
            query, _ = attention(query, tokens, tokens, need_weights=False)
        return self.latent_norm(self.latent_proj(query[:, 0]))  # (B, latent_dim)

    def decode(self, latent: Tensor, height: int, width: int) -> Tensor:
        """(B, latent_dim) style latent -> (B, output_dim, height, width) style map (row-major positions)."""
        self.check_latent(latent)
        if height < 1 or width < 1 or height * width > self.config.max_len:
            raise ValueError(
                f"`height` x `width` must be between 1 and {self.config.max_len} positions, got {height} x {width}."
            )
        batch = latent.shape[0]
        memory = self.latent_to_d_model(latent)[:, None]  # (B, 1, d_model)
        target = self.pos_encoder(self.tgt_init.expand(height * width, -1)[None])  # (1, H*W, d_model)
        target = target.expand(batch, -1, -1)  # (B, H*W, d_model)
        tokens = self.transformer_decoder(target, memory)  # (B, H*W, d_model)
        style_map = self.output_proj(tokens)  # (B, H*W, output_dim)
        return style_map.view(batch, height, width, -1).permute(0, 3, 1, 2)  # (B, output_dim, H, W)

    def _check_hidden_states(self, hidden_states: Tensor) -> None:
        if not isinstance(hidden_states, Tensor) or hidden_states.ndim != 3:
            raise ValueError(
                "`hidden_states` must be a (batch, tokens, features) tensor, got "
                f"{getattr(hidden_states, 'shape', type(hidden_states).__name__)}."
            )
        if hidden_states.shape[-1] != self.config.input_dim:
            raise ValueError(
                f"`hidden_states` must have {self.config.input_dim} features per token (the image encoder's hidden "
                f"size), got {hidden_states.shape[-1]}."
            )
        if not 1 <= hidden_states.shape[1] <= self.config.max_len:
            raise ValueError(
                f"`hidden_states` must have 1..{self.config.max_len} tokens, got {hidden_states.shape[1]}."
            )

    def check_latent(self, latent: Tensor) -> None:
        """Raise ValueError naming `latent` unless it is a (batch, latent_dim) tensor."""
        if not isinstance(latent, Tensor) or latent.ndim != 2 or latent.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"`latent` must be a (batch, {self.config.latent_dim}) torch tensor (torch.from_numpy converts a "
                f"numpy array), got {tuple(latent.shape) if isinstance(latent, Tensor) else type(latent).__name__}."
            )

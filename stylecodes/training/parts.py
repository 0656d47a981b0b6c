"""The models of a training run: the frozen base (UNet, VAE, text encoder), frozen SigLIP, and the trained control
module (which holds the style autoencoder), initialised as the paper says or from a served version.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer, SiglipVisionModel

from stylecodes import hub
from stylecodes.models.control import StyleCodesControlModel
from stylecodes.models.image_encoder import load_vision_model
from stylecodes.training.config import TrainConfig
from stylecodes.versions import ModelVersionSpec

logger = logging.getLogger(__name__)


@dataclass
class TrainingParts:
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    unet: UNet2DConditionModel
    image_encoder: SiglipVisionModel
    control_model: StyleCodesControlModel

    @property
    def frozen(self) -> tuple[nn.Module, ...]:
        return (self.vae, self.text_encoder, self.unet, self.image_encoder)


def load_parts(config: TrainConfig) -> TrainingParts:
    """Load the frozen models named in `config` and build (or load) the control module to train."""
    from stylecodes.loaders import load_base_components

    spec = _source_spec(config)
    base = hub.resolve_base_model(spec)
    components = load_base_components(base)
    image_encoder = load_vision_model(hub.resolve_image_encoder(spec))
    control_model = StyleCodesControlModel.from_unet(
        components["unet"],
        autoencoder_input_dim=image_encoder.config.hidden_size,
        d_model=config.d_model,
        num_heads=config.num_heads,
    )
    if config.init_from is None:
        init_new_layers(control_model, config.init_std)
    else:
        load_served_weights(control_model, config.init_from)
    parts = TrainingParts(
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        unet=components["unet"],
        image_encoder=image_encoder,
        control_model=control_model,
    )
    freeze(parts)
    return parts


def freeze(parts: TrainingParts) -> None:
    """Frozen parts in eval mode without gradients; the control module in train mode with them."""
    for module in parts.frozen:
        module.eval().requires_grad_(False)
    parts.control_model.train().requires_grad_(True)


def _source_spec(config: TrainConfig) -> ModelVersionSpec:
    """A spec naming the run's base and image encoder, so `hub` resolves them (folder or Hub id) as for serving."""
    return ModelVersionSpec(
        version=config.version,
        title=config.title,
        short_title="training",
        base_model=config.base_model,
        checkpoint_repo=None,
        checkpoint_files=(),
        image_encoder=config.image_encoder,
    )


def init_new_layers(control_model: StyleCodesControlModel, std: float) -> None:
    """The paper's initialisation: every new weight white noise N(0, std), biases zero, norms at identity, and the
    residual path into the base zero, so the base model is exactly unchanged before training.

    The collaboration linears map [control, base] channels to [new control, new base]. The base-to-base quarter is
    the identity and the control-to-base quarter zero (the paper's zero-initialised residual layers); the control
    stream's own quarters are the identity plus noise, so the control stream passes its state on from the start.

    `std=0` keeps the layers' default initialisation and only zeroes the residual path. Measured on the demo:
    with sigma 1e-4 in every layer the gradient reaching the autoencoder through its chain of 1e-4 layers falls
    far below AdamW's epsilon, and after 250 steps at lr 5e-4 its weights had not moved (every image gave the
    same code); see docs/training.md.
    """
    collaboration = {*control_model.control_model.up_zero_convs_out, control_model.middle_block_out}
    with torch.no_grad():
        for module in control_model.modules():
            if module in collaboration or std == 0:  # std 0: keep torch's / diffusers' default initialisation
                continue
            for name, parameter in module.named_parameters(recurse=False):
                if parameter.ndim >= 2:  # linear, conv and attention weights; the autoencoder's learned queries
                    parameter.normal_(0.0, std)
                elif "bias" in name:
                    parameter.zero_()
                # 1-d weights are norm gains: left at one (noise there would silence every layer after it)
        for linear in collaboration:
            channels = linear.weight.shape[0] // 2
            linear.weight.copy_(torch.eye(2 * channels) + torch.randn_like(linear.weight) * std)
            linear.weight[channels:] = 0.0  # rows of the new base ...
            linear.weight[channels:, channels:] = torch.eye(channels)  # ... = the old base, untouched
            linear.bias.zero_()


def load_served_weights(control_model: StyleCodesControlModel, version: int) -> None:
    """`--init-from N`: start from version N's control module (e.g. 1, the published release) and fine-tune it."""
    from stylecodes.checkpoint import load_control_weights
    from stylecodes.versions import get_spec

    spec = get_spec(version)
    if spec.folder is not None:
        from stylecodes.loaders import version_control_weights

        path = version_control_weights(spec)
    elif spec.checkpoint_repo is not None:
        path = hub.resolve_checkpoint(spec)
    else:
        raise ValueError(f"Version {version} has no control weights to start from.")
    load_control_weights(control_model, path)
    logger.info("control module initialised from version %d (%s)", version, path)


def trainable_state_dict(control_model: StyleCodesControlModel) -> dict[str, torch.Tensor]:
    """The control module's weights as float32 contiguous CPU tensors (what a version folder stores)."""
    return {key: value.detach().float().contiguous().cpu() for key, value in control_model.state_dict().items()}


def describe_parts(parts: TrainingParts) -> dict[str, int]:
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    return {
        "trained_parameters": count(parts.control_model),
        "frozen_parameters": sum(count(m) for m in parts.frozen),
    }


def replace_config(config: TrainConfig, **changes: object) -> TrainConfig:
    return dataclasses.replace(config, **changes)


__all__ = ["Path", "TrainingParts", "freeze", "init_new_layers", "load_parts", "trainable_state_dict"]

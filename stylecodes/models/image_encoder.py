"""Image -> stylecode: the SigLIP vision tower, then the style autoencoder's encoder, then the 6-bit codec.

Preprocessing is the published tool's, pinned so the same image always gives the same code:

1. RGB (see `stylecodes.images.load_image`), resized to 512x512 with PIL's bicubic filter (what the published
   `image.resize((512, 512))` does);
2. the SigLIP image processor: bicubic resize to 224x224, scale to [0, 1], normalise with mean 0.5 and std 0.5.
   transformers 5 has two backends for it (torchvision and PIL) that can differ in the last bit; the PIL one
   (`SiglipImageProcessorPil`) is used explicitly, whatever is installed;
3. SigLIP's hidden states of the second-to-last layer, (B, 196, 768) for SigLIP-base;
4. `StyleAutoencoder.encode` -> (B, 20) latent -> `codec.quantize`.

Encoding needs only SigLIP and the autoencoder: `StyleImageEncoder.load` never builds or reads the UNet, and reads
only the `sref_autoencoder.*` tensors of the control checkpoint.

Encoding always runs in float32 (`keep_float32`), whatever dtype the pipeline around it uses: in half precision a
value near a quantisation boundary can land on the next level, and the same image must give the same code on a GPU
worker in fp16 as in the CPU command line. The two models are small (about 105M parameters), so this costs little.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from transformers import SiglipVisionModel

try:  # transformers >= 5: pin the PIL backend explicitly
    from transformers import SiglipImageProcessorPil as _SiglipProcessor
except ImportError:  # transformers 4: the default SigLIP processor is the PIL/numpy one
    from transformers import SiglipImageProcessor as _SiglipProcessor

from stylecodes import checkpoint, hub
from stylecodes.codec import StyleCode, code_from_latent
from stylecodes.images import to_rgb
from stylecodes.models.autoencoder import StyleAutoencoder
from stylecodes.models.precision import ENCODER_DTYPE, keep_float32

STYLE_IMAGE_SIZE = 512  # the published tool resizes every style image to this square first
SIGLIP_HIDDEN_LAYER = -2  # second-to-last layer's hidden states, as the release was trained


def make_siglip_processor() -> _SiglipProcessor:
    """SigLIP-base's preprocessing (its preprocessor_config.json), on the PIL backend for reproducible codes."""
    return _SiglipProcessor(
        do_resize=True,
        size={"height": 224, "width": 224},
        resample=Image.Resampling.BICUBIC,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
    )


class StyleImageEncoder:
    """SigLIP vision tower + style autoencoder. Runs on the vision tower's device, always in float32."""

    def __init__(self, vision_model: SiglipVisionModel, autoencoder: StyleAutoencoder, *, version: int) -> None:
        if vision_model.config.hidden_size != autoencoder.config.input_dim:
            raise ValueError(
                f"`autoencoder` expects {autoencoder.config.input_dim}-wide tokens but `vision_model` gives "
                f"{vision_model.config.hidden_size}."
            )
        self.vision_model = keep_float32(vision_model)  # (a pipeline pins them when it is built: no-ops then)
        self.autoencoder = keep_float32(autoencoder)
        self.version = version
        self.processor = make_siglip_processor()

    @property
    def device(self) -> torch.device:
        return self.vision_model.device

    @property
    def dtype(self) -> torch.dtype:
        return ENCODER_DTYPE

    def pixel_values(self, images: Sequence[Image.Image]) -> Tensor:
        """Published preprocessing -> (B, 3, 224, 224) float32 on the CPU."""
        if not images:
            raise ValueError("`images` is empty; pass at least one image.")
        bad = [type(image).__name__ for image in images if not isinstance(image, Image.Image)]
        if bad:
            raise ValueError(f"`images` must be PIL images (use stylecodes.images.load_image), got {bad[0]}.")
        # to_rgb: the same RGB as load_image (transparency composited on white), however the image arrived
        size = (STYLE_IMAGE_SIZE, STYLE_IMAGE_SIZE)
        resized = [to_rgb(image).resize(size, Image.Resampling.BICUBIC) for image in images]
        return self.processor(images=resized, return_tensors="pt").pixel_values

    @torch.inference_mode()
    def encode_latents(self, images: Sequence[Image.Image]) -> Tensor:
        """(B,) images -> (B, 20) float32 style latents, before quantisation."""
        pixels = self.pixel_values(images).to(self.device, ENCODER_DTYPE)  # (B, 3, 224, 224)
        hidden = siglip_hidden_states(self.vision_model, pixels)  # (B, 196, 768)
        return self.autoencoder.encode(hidden).cpu()  # (B, 20)

    def encode(self, images: Sequence[Image.Image]) -> list[StyleCode]:
        """(B,) images -> B stylecodes of this encoder's version."""
        return [code_from_latent(latent.numpy(), self.version) for latent in self.encode_latents(images)]


class _HiddenStatesReady(Exception):  # control flow: carries the hidden states out of the forward pass
    def __init__(self, hidden: Tensor) -> None:
        super().__init__()
        self.hidden = hidden


def siglip_hidden_states(vision_model: SiglipVisionModel, pixels: Tensor) -> Tensor:
    """`hidden_states[-2]` of the vision tower, without running its last layer and pooling head.

    Equal to `vision_model(pixels, output_hidden_states=True).hidden_states[-2]`: hidden_states[0] is the patch
    embedding and hidden_states[i] the output of layer i, so [-2] is the output of the second-to-last layer. Stopping
    there (a forward hook raises once that layer is done) skips one of SigLIP-base's 12 layers and its pooling head.
    """
    tower = getattr(vision_model, "vision_model", vision_model)  # transformers 4 nests the tower, 5 does not
    layer = tower.encoder.layers[SIGLIP_HIDDEN_LAYER]

    def stop(module: torch.nn.Module, inputs: object, output: Tensor | tuple[Tensor, ...]) -> None:
        raise _HiddenStatesReady(output[0] if isinstance(output, tuple) else output)

    handle = layer.register_forward_hook(stop)
    try:
        vision_model(pixel_values=pixels)
    except _HiddenStatesReady as ready:
        return ready.hidden
    finally:
        handle.remove()
    raise RuntimeError("the SigLIP forward pass finished without running its second-to-last layer")


def load_vision_model(folder: Path) -> SiglipVisionModel:
    """SigLIP's vision tower from a SiglipVisionModel or a full SiglipModel folder (the Hub repo is the latter)."""
    try:
        model = SiglipVisionModel.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise hub.ModelLoadError(f"Could not load the SigLIP image encoder from {folder}: {exc}") from exc
    return model.eval().requires_grad_(False)


def read_autoencoder_state_dict(path: Path, prefix: str) -> dict[str, Tensor]:
    """Only the `prefix` tensors of a control checkpoint, with the prefix removed.

    The full checkpoint is 2.7 GB; `.safetensors` are read tensor by tensor and `.bin` files memory-mapped, so only
    the autoencoder's bytes are ever read into memory.
    """
    state_dict = {key.removeprefix(prefix): value for key, value in _read_prefixed(path, prefix).items()}
    if not state_dict:
        raise checkpoint.CheckpointError(f"{path} has no `{prefix}*` tensors; is it a StyleCodes control checkpoint?")
    return state_dict


def load_autoencoder(path: Path, prefix: str, *, input_dim: int, **config: int) -> StyleAutoencoder:
    """The autoencoder of a control checkpoint; its map width (the UNet's mid-block width) is read from the file."""
    state_dict = read_autoencoder_state_dict(path, prefix)
    output_proj = state_dict.get("output_proj.weight")
    if output_proj is not None:  # otherwise check_state_dict below names the missing key
        config = {"output_dim": output_proj.shape[0], **config}
    autoencoder = StyleAutoencoder(input_dim=input_dim, **config)
    checkpoint.check_state_dict(autoencoder, state_dict, source=f"{path} ({prefix}*)")
    autoencoder.load_state_dict(state_dict, strict=True)
    return autoencoder.eval().requires_grad_(False)


def _read_prefixed(path: Path, prefix: str) -> dict[str, Tensor]:
    if path.suffix.lower() == checkpoint.SAFETENSORS_SUFFIX:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as file:
                return {key: file.get_tensor(key) for key in file.keys() if key.startswith(prefix)}
        except (SafetensorError, OSError) as exc:
            raise checkpoint.CheckpointError(f"Could not read {path}: {exc}. Download or convert it again.") from exc
    # The loader memory-maps zip pickles, so only the autoencoder's tensors are read into memory (cloned).
    loaded = checkpoint.load_state_dict(path)
    return {key: value.clone() for key, value in loaded.items() if key.startswith(prefix)}

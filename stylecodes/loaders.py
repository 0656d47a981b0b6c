"""Building a model version's parts from its spec: a model-version folder (the demo's too), or the published files.

Every version resolves every file first (local paths from the environment, else the Hugging Face Hub, see
`stylecodes.hub`), so a missing file fails fast with instructions, before gigabytes are read. The weights are then
fingerprinted (the published checkpoint hashed by `hub.fingerprint`; a folder's files checked against its manifest)
and checked against the control module the base model needs before the base is loaded, so a damaged or wrong file is
reported in seconds, naming the file and what to do, and never reaches a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from stylecodes import hub
from stylecodes.checkpoint import CheckpointError, check_control_parts, check_state_dict, load_state_dict
from stylecodes.demo.deadiff import build_demo_deadiff
from stylecodes.models.control import StyleCodesControlModel
from stylecodes.models.deadiff.model import DEADiffModel
from stylecodes.models.deadiff.settings import deadiff_settings
from stylecodes.models.image_encoder import StyleImageEncoder, load_autoencoder, load_vision_model
from stylecodes.modes.deadiff import DEADiffMode
from stylecodes.pipelines.scheduler import make_scheduler
from stylecodes.pipelines.text_to_image import StyleCodesPipeline
from stylecodes.versions import ModelVersionSpec

logger = logging.getLogger(__name__)

class LoadedModel(NamedTuple):
    pipeline: StyleCodesPipeline
    base_model: str  # where the SD1.5 base came from, for metadata and messages
    fingerprint: hub.ModelFingerprint  # what exactly the control weights are


def resolve_control_weights(spec: ModelVersionSpec) -> hub.ResolvedCheckpoint:
    """The control module's weights as a local file: a version folder's (its fingerprint checked first), or the
    published checkpoint (environment path, else the Hub)."""
    if spec.folder is None:
        return hub.resolve_checkpoint(spec)
    from stylecodes.training.export import CONTROL_FOLDER, check_fingerprint

    folder = Path(spec.folder)
    check_fingerprint(folder, spec.fingerprint)
    path = folder / CONTROL_FOLDER / "diffusion_pytorch_model.safetensors"
    if not path.is_file():
        raise hub.ModelLoadError(f"Model version {spec.version}: {path} is missing; export the model again.")
    return hub.ResolvedCheckpoint(path, repo=None, filename=path.name, revision=None)


def load_style_image_encoder(spec: ModelVersionSpec, *, device: str | torch.device = "cpu") -> StyleImageEncoder:
    """Version `spec`'s image -> code encoder on `device` (in float32): SigLIP plus the checkpoint's autoencoder.

    Never builds or reads the UNet: encoding needs only these two models.
    """
    checkpoint = resolve_control_weights(spec)
    vision_model = load_vision_model(hub.resolve_image_encoder(spec))
    with _what_to_do_about(spec, checkpoint):
        autoencoder = load_autoencoder(
            checkpoint.path,
            spec.autoencoder_prefix,
            input_dim=vision_model.config.hidden_size,
            **spec.autoencoder_config,
        )
    encoder = StyleImageEncoder(vision_model, autoencoder, version=spec.version)
    encoder.vision_model.to(device=device)
    encoder.autoencoder.to(device=device)
    return encoder


def load_model(spec: ModelVersionSpec) -> LoadedModel:
    """SD1.5-family base + control weights + SigLIP for version `spec` (published, or a folder), fp32 on the CPU."""
    # 1. Resolve all files first: a missing one fails in seconds, with instructions.
    checkpoint = resolve_control_weights(spec)
    base = hub.resolve_base_model(spec)
    siglip_folder = hub.resolve_image_encoder(spec)
    settings = deadiff_settings()  # the published model's deadiff mode, only once the operator accepted its licence
    deadiff_path = settings.require_checkpoint() if settings.enabled and spec.folder is None else None
    # 2. The weights before the big base model: their hash (a damaged download), then their keys and shapes.
    fingerprint = _fingerprint(spec, checkpoint)
    image_encoder = load_vision_model(siglip_folder)
    width = image_encoder.config.hidden_size
    state_dict = _read_checkpoint(spec, checkpoint, _control_layout(spec, base, autoencoder_input_dim=width))
    # 3. SD1.5 components (any fine-tune), then the control module built for its UNet.
    components = load_base_components(base)
    control_model = StyleCodesControlModel.from_unet(
        components["unet"], autoencoder_input_dim=width, **spec.autoencoder_config
    )
    with _what_to_do_about(spec, checkpoint):  # (a single file's UNet is only known now)
        check_state_dict(control_model, state_dict, source=checkpoint.describe())
    control_model.load_state_dict(state_dict, strict=True)
    control_model.eval().requires_grad_(False)
    pipeline = StyleCodesPipeline(
        **components,
        control_model=control_model,
        scheduler=make_scheduler(),
        image_encoder=image_encoder,
        model_version=spec.version,
    )
    if deadiff_path is not None:
        pipeline.add_mode(DEADiffMode(DEADiffModel.from_file(deadiff_path), pipeline.unet))
    elif spec.is_demo:  # the demo's own toy DEADiff (random weights from a fixed seed: none of DEADiff's)
        pipeline.add_mode(DEADiffMode(build_demo_deadiff(pipeline.unet), pipeline.unet))
    logger.info(
        "Model version %d: control weights %s (revision %s, sha256 %s), base %s.",
        spec.version,
        fingerprint.source,
        fingerprint.revision,
        fingerprint.sha256,
        base.label,
    )
    return LoadedModel(pipeline, base.label, fingerprint)


def _fingerprint(spec: ModelVersionSpec, checkpoint: hub.ResolvedCheckpoint) -> hub.ModelFingerprint:
    if spec.folder is not None:  # resolve_control_weights checked the weights against the manifest's fingerprint
        return hub.ModelFingerprint(spec.fingerprint.removeprefix("sha256:"), spec.folder, revision=None)
    return hub.fingerprint(spec, checkpoint)


def _control_layout(spec: ModelVersionSpec, base: hub.BaseModelSource, *, autoencoder_input_dim: int) -> Any:
    """The control module `base` needs, on the meta device (keys and shapes only: the 517 tensors for SD1.5).

    None for a single-file base: its UNet config is known only once diffusers has read the file.
    """
    if base.is_single_file:
        return None
    from diffusers import UNet2DConditionModel

    try:
        unet_config = UNet2DConditionModel.load_config(base.path, subfolder="unet")
    except (OSError, ValueError) as exc:
        raise hub.ModelLoadError(f"Could not load the SD1.5 base model from {base.label}: {exc}") from exc
    with torch.device("meta"):
        return StyleCodesControlModel.from_unet_config(
            unet_config, autoencoder_input_dim=autoencoder_input_dim, **spec.autoencoder_config
        )


def _read_checkpoint(
    spec: ModelVersionSpec, checkpoint: hub.ResolvedCheckpoint, layout: torch.nn.Module | None
) -> dict[str, Tensor]:
    """The checkpoint's tensors (memory-mapped for `.bin`), checked against `layout`, or else for the module's parts."""
    with _what_to_do_about(spec, checkpoint):
        state_dict = load_state_dict(checkpoint.path)
        if layout is None:
            check_control_parts(state_dict, source=checkpoint.describe())
        else:
            check_state_dict(layout, state_dict, source=checkpoint.describe())
    return state_dict


@contextmanager
def _what_to_do_about(spec: ModelVersionSpec, checkpoint: hub.ResolvedCheckpoint) -> Iterator[None]:
    """A `CheckpointError` also says where the file came from and how to replace it."""
    try:
        yield
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} {hub.redownload_help(spec, checkpoint)}") from exc


def load_version_base(spec: ModelVersionSpec) -> tuple[dict[str, Any], str]:
    """Version `spec`'s SD1.5-family base alone (vae, text_encoder, tokenizer, unet), fp32 on the CPU, and its label.

    What personal-style training needs: a private copy of the base, without the control module or SigLIP.
    """
    base = hub.resolve_base_model(spec)
    components = load_base_components(base)
    return {name: components[name] for name in ("vae", "text_encoder", "tokenizer", "unet")}, base.label


def load_base_components(base: hub.BaseModelSource) -> dict[str, Any]:
    """vae, text_encoder, tokenizer, unet (+ safety_checker, feature_extractor when the folder has them)."""
    try:
        if base.is_single_file:
            components = _load_single_file_components(base)
        else:
            components = _load_folder_components(base.path)
    except (OSError, ValueError) as exc:
        raise hub.ModelLoadError(f"Could not load the SD1.5 base model from {base.label}: {exc}") from exc
    for name in ("vae", "text_encoder", "unet", "safety_checker"):
        if components.get(name) is not None:
            components[name].eval().requires_grad_(False)
    return components


def _load_single_file_components(base: hub.BaseModelSource) -> dict[str, Any]:
    """vae, text_encoder, tokenizer, unet of a single-file SD1.5 checkpoint; single files get no safety checker."""
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        # Explicit None for both keeps diffusers from loading them. Its deprecated `load_safety_checker` must not be
        # passed at all: any value but None, even False, makes it download CompVis/stable-diffusion-safety-checker.
        sd = StableDiffusionPipeline.from_single_file(str(base.path), safety_checker=None, feature_extractor=None)
    except SingleFileComponentError as exc:  # a plain Exception subclass; its message is a multi-line code recipe
        detail = (exc.message or str(exc)).strip().splitlines()[0]
        raise hub.ModelLoadError(
            f"Could not load the SD1.5 base model from {base.label}: {detail} The file must be a complete SD1.5 "
            "checkpoint (UNet, VAE and text encoder), or use a diffusers folder of the model instead."
        ) from exc
    return {name: getattr(sd, name) for name in ("vae", "text_encoder", "tokenizer", "unet")}


def _load_folder_components(folder: Path) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    try:  # transformers >= 5 without torchvision would fall back to this class anyway, with a warning
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor

    components: dict[str, Any] = {
        "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae"),
        "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
        "tokenizer": CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
        "safety_checker": None,
        "feature_extractor": None,
    }
    if (folder / "safety_checker" / "config.json").is_file() and (folder / "feature_extractor").is_dir():
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

        components["safety_checker"] = StableDiffusionSafetyChecker.from_pretrained(folder, subfolder="safety_checker")
        components["feature_extractor"] = CLIPImageProcessor.from_pretrained(folder, subfolder="feature_extractor")
    else:
        # Not a warning here: the processes that serve models report it once at startup (bot.worker.__main__).
        logger.debug("%s has no safety checker; generated images will not be checked (nsfw=None).", folder)
    return components

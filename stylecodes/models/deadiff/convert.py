"""`deadiff_v1.ckpt` (the released Lightning checkpoint) -> one `.safetensors` file in `DEADiffModel`'s layout.

Only what the style mode runs is kept (about 0.6 of the 7.43 GB): the style branch's CLIP tower, `ln_vision`, Q-Former,
query tokens and projection, and the style layers' image projections. The SD1.x UNet, VAE and text encoder stay the
engine's own; the content branch, BLIP-2's pre-training heads and the content layers' projections (which the style
mode feeds zeros) are dropped. The configuration goes into the file's metadata.

Key mapping (theirs -> ours):
- `style_blip.visual_encoder.*` (LAVIS CLIP ViT) -> `style_encoder.vision.*` (transformers CLIP): `conv1` ->
  `embeddings.patch_embedding`, `class_embedding`, `positional_embedding` -> `embeddings.position_embedding.weight`,
  `ln_pre` -> `pre_layrnorm`, `transformer.resblocks.N.{attn.in_proj_*, attn.out_proj, ln_1, mlp.c_fc, mlp.c_proj,
  ln_2}` -> `encoder.layers.N.{self_attn.{q,k,v}_proj (split), self_attn.out_proj, layer_norm1, mlp.fc1, mlp.fc2,
  layer_norm2}`;
- `style_blip.Qformer.bert.*` (LAVIS BERT) -> `style_encoder.qformer.*` (transformers Blip2QFormerModel):
  `embeddings.LayerNorm` -> `layernorm`, `encoder.layer.N.{attention,crossattention}.self` -> `.attention`; the
  word and position embeddings of the subject text become `style_encoder.condition_embeds`;
- `style_blip.{ln_vision, query_tokens}`, `style_proj_layer.{LayerNorm, dense1, dense2}` -> `style_encoder.{ln_vision,
  query_tokens}`, `style_encoder.proj.{norm, dense1, dense2}`;
- `model.diffusion_model.{input_blocks.N, middle_block, output_blocks.N}.1.transformer_blocks.0.attn2.i_to_{k,v}` ->
  `image_kv.L.to_{k,v}`, L the layer's index in that order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from stylecodes.checkpoint import CheckpointError, _without_shared_storage, check_state_dict
from stylecodes.models.deadiff.attention import CONTENT_LAYERS
from stylecodes.models.deadiff.checkpoint_reader import read_lightning_checkpoint
from stylecodes.models.deadiff.files import CONFIG_METADATA_KEY
from stylecodes.models.deadiff.model import DEADiffModel

# "[CLS] style [SEP]" in bert-base-uncased's vocabulary, which LAVIS's BLIP-2 tokenizer uses (it only appends
# "[DEC]" at 30522): the subject text DEADiff's style Q-Former reads.
STYLE_CONDITION_TOKEN_IDS = (101, 2806, 102)
RELEASE_REPO, RELEASE_FILE = "qth/DEADiff", "deadiff_v1.ckpt"
HEAD_DIM = 64  # CLIP ViT-L (1024 / 16 heads) and BERT-base (768 / 12 heads); head counts are not in the weights
LICENCE_NOTE = (
    "DEADiff (bytedance/DEADiff): code Apache-2.0; the README limits use of the model to personal, research and "
    "non-commercial purposes."
)

_VISION = "style_blip.visual_encoder."
_QFORMER = "style_blip.Qformer.bert."
_IMAGE_KV = re.compile(
    r"model\.diffusion_model\.(input_blocks\.(\d+)|middle_block|output_blocks\.(\d+))\.1\."
    r"transformer_blocks\.0\.attn2\.i_to_([kv])\.weight"
)
# Parts of the released checkpoint the style mode does not use (all of them in a genuine one).
_UNUSED_PREFIXES = (
    "model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "model_ema.", "content_blip.",
    "content_proj_layer.", "style_blip.vision_proj.", "style_blip.text_proj.", "style_blip.itm_head.",
    "style_blip.Qformer.cls.",
)
_UNUSED_KEYS = {"style_blip.temp", _QFORMER + "embeddings.position_ids", "ctx_embeddings_cache"}
_VISION_LAYER_NAMES = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
                       "attn.out_proj": "self_attn.out_proj"}
_LISTED_KEYS = 8


def convert_deadiff_checkpoint(
    src: str | Path,
    dst: str | Path,
    *,
    condition_token_ids: Sequence[int] = STYLE_CONDITION_TOKEN_IDS,
    vision_heads: int | None = None,
    qformer_heads: int | None = None,
) -> list[str]:
    """Convert DEADiff's checkpoint to `dst` (.safetensors); returns notes (keys and objects that were ignored).

    Nothing is written unless every tensor the style mode needs is there with consistent shapes; the pickle is
    read without being executed. Head counts default to width / 64 (DEADiff's CLIP ViT-L and BERT-base).
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() != ".safetensors":
        raise CheckpointError(f"The converted DEADiff weights must end in `.safetensors`, got {dst}.")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise CheckpointError(f"Refusing to overwrite the source checkpoint {src}.")
    checkpoint = read_lightning_checkpoint(src)
    theirs = checkpoint.state_dict
    missing = _missing_keys(theirs)
    used, unexpected = set(), []
    for key in theirs:
        if _is_used(key):
            used.add(key)
        elif not (key.startswith(_UNUSED_PREFIXES) or key in _UNUSED_KEYS or "." not in key):
            unexpected.append(key)
    if missing:
        raise CheckpointError(
            f"{src} is not DEADiff's checkpoint: {len(missing)} tensor(s) it must have are missing, e.g. "
            f"{_some(missing)}; {len(unexpected)} unexpected, e.g. {_some(unexpected)}. Use `deadiff_v1.ckpt` from "
            "the Hugging Face repository qth/DEADiff."
        )
    config = infer_config(theirs, condition_token_ids, vision_heads, qformer_heads)
    ours = map_state_dict(theirs, condition_token_ids)

    with torch.device("meta"):
        expected = DEADiffModel(**config)
    check_state_dict(expected, ours, source=f"{src} (mapped to DEADiffModel)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "converted_from": src.name, "licence": LICENCE_NOTE,
                CONFIG_METADATA_KEY: json.dumps(config, sort_keys=True)}
    save_file(_without_shared_storage(ours), str(dst), metadata=metadata)  # (safetensors refuses shared memory)
    notes = [f"ignored {len(theirs) - len(used)} tensors the style mode does not use (SD1.x base, content branch...)"]
    if unexpected:
        notes.append(f"{len(unexpected)} tensor(s) outside DEADiff's known layout were ignored: {_some(unexpected)}")
    if checkpoint.ignored_objects:
        notes.append(f"non-tensor objects left unread: {', '.join(checkpoint.ignored_objects[:_LISTED_KEYS])}")
    return notes


def download_release() -> Path:
    """DEADiff's released checkpoint from the Hugging Face Hub (its cache, progress bar, HF_HUB_OFFLINE)."""
    from huggingface_hub import hf_hub_download

    from stylecodes.hub import ModelLoadError

    try:
        return Path(hf_hub_download(RELEASE_REPO, RELEASE_FILE))
    except Exception as error:  # network, offline mode, disk full: one clear message
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"Could not get {RELEASE_REPO}/{RELEASE_FILE} from the Hugging Face Hub ({reason}); download it "
            "elsewhere and pass it with --checkpoint."
        ) from error


# -------------------------------------------------------------------------------------------------- the layout


def image_kv_layers(theirs: Mapping[str, Tensor]) -> list[tuple[str, int]]:
    """(ldm path, layer index) of every cross-attention with image projections, in DEADiff's layer order."""
    found = set()
    for key in theirs:
        match = _IMAGE_KV.fullmatch(key)
        if match:
            section = 0 if match.group(2) else 1 if match.group(1) == "middle_block" else 2
            found.add((section, int(match.group(2) or match.group(3) or 0), match.group(1)))
    return [(path, index) for index, (_, _, path) in enumerate(sorted(found))]


def _is_used(key: str) -> bool:
    if _IMAGE_KV.fullmatch(key):
        return True
    if key.startswith((_VISION, "style_blip.ln_vision.", "style_proj_layer.")) or key == "style_blip.query_tokens":
        return True
    return key.startswith(_QFORMER) and key not in _UNUSED_KEYS


def _missing_keys(theirs: Mapping[str, Tensor]) -> list[str]:
    required = [
        _VISION + "conv1.weight", _VISION + "class_embedding", _VISION + "positional_embedding",
        _VISION + "ln_pre.weight", _VISION + "transformer.resblocks.0.attn.in_proj_weight",
        "style_blip.ln_vision.weight", "style_blip.query_tokens",
        _QFORMER + "embeddings.word_embeddings.weight", _QFORMER + "embeddings.position_embeddings.weight",
        _QFORMER + "embeddings.LayerNorm.weight", _QFORMER + "encoder.layer.0.crossattention.self.key.weight",
        _QFORMER + "encoder.layer.0.intermediate_query.dense.weight",
        "style_proj_layer.dense1.weight", "style_proj_layer.LayerNorm.weight",
    ]
    missing = [key for key in required if key not in theirs]
    if not image_kv_layers(theirs):
        missing.append("model.diffusion_model.*.attn2.i_to_k.weight")
    return missing


def infer_config(
    theirs: Mapping[str, Tensor],
    condition_token_ids: Sequence[int],
    vision_heads: int | None = None,
    qformer_heads: int | None = None,
) -> dict[str, Any]:
    """`DEADiffModel`'s config from the checkpoint's shapes (head counts: given, or width / 64)."""
    patch = theirs[_VISION + "conv1.weight"]
    width, patch_size = patch.shape[0], patch.shape[-1]
    positions = theirs[_VISION + "positional_embedding"].shape[0]
    grid = round((positions - 1) ** 0.5)
    hidden = theirs["style_blip.query_tokens"].shape[-1]
    layers = image_kv_layers(theirs)
    vision = {
        "hidden_size": width, "patch_size": patch_size, "image_size": grid * patch_size,
        "num_hidden_layers": _count(theirs, _VISION + "transformer.resblocks.", ".ln_1.weight"),
        "intermediate_size": theirs[_VISION + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_attention_heads": vision_heads or width // HEAD_DIM,
    }
    qformer = {
        "hidden_size": hidden,
        "num_hidden_layers": _count(theirs, _QFORMER + "encoder.layer.", ".attention.self.query.weight"),
        "intermediate_size": theirs[_QFORMER + "encoder.layer.0.intermediate_query.dense.weight"].shape[0],
        "encoder_hidden_size": theirs[_QFORMER + "encoder.layer.0.crossattention.self.key.weight"].shape[1],
        "num_attention_heads": qformer_heads or hidden // HEAD_DIM,
    }
    return {
        "encoder_config": {
            "vision_config": vision,
            "qformer_config": qformer,
            "num_query_tokens": theirs["style_blip.query_tokens"].shape[1],
            "condition_length": len(condition_token_ids),
            "proj_hidden_size": theirs["style_proj_layer.dense1.weight"].shape[0],
        },
        "inner_dims": [
            theirs[f"model.diffusion_model.{path}.1.transformer_blocks.0.attn2.i_to_k.weight"].shape[0]
            for path, _ in layers
        ],
        "content_layers": list(CONTENT_LAYERS),
    }


def map_state_dict(theirs: Mapping[str, Tensor], condition_token_ids: Sequence[int]) -> dict[str, Tensor]:
    """Their keys -> `DEADiffModel`'s (see the module docstring); content layers' projections are dropped."""
    ours: dict[str, Tensor] = {}
    for key, value in theirs.items():
        if key.startswith(_VISION):
            ours.update(_vision_entry(key.removeprefix(_VISION), value))
        elif key.startswith(_QFORMER + "encoder."):
            name = key.removeprefix(_QFORMER).replace("attention.self.", "attention.attention.")
            ours[f"style_encoder.qformer.{name}"] = value
    ours["style_encoder.qformer.layernorm.weight"] = theirs[_QFORMER + "embeddings.LayerNorm.weight"]
    ours["style_encoder.qformer.layernorm.bias"] = theirs[_QFORMER + "embeddings.LayerNorm.bias"]
    ids = torch.tensor(list(condition_token_ids))
    words = theirs[_QFORMER + "embeddings.word_embeddings.weight"]
    if int(ids.max()) >= words.shape[0] or int(ids.min()) < 0:
        raise CheckpointError(f"The condition token ids {list(condition_token_ids)} do not fit a {words.shape[0]}-word "
                              "vocabulary.")
    positions = theirs[_QFORMER + "embeddings.position_embeddings.weight"][: len(ids)]
    # the text's embeddings in one constant: word + absolute position, in float32 like the rest of the encoder
    ours["style_encoder.condition_embeds"] = (words[ids].float() + positions.float()).unsqueeze(0)
    for name in ("weight", "bias"):
        ours[f"style_encoder.ln_vision.{name}"] = theirs[f"style_blip.ln_vision.{name}"]
        ours[f"style_encoder.proj.norm.{name}"] = theirs[f"style_proj_layer.LayerNorm.{name}"]
        for dense in ("dense1", "dense2"):
            ours[f"style_encoder.proj.{dense}.{name}"] = theirs[f"style_proj_layer.{dense}.{name}"]
    ours["style_encoder.query_tokens"] = theirs["style_blip.query_tokens"]
    for path, index in image_kv_layers(theirs):
        if index in CONTENT_LAYERS:
            continue
        for kind in ("k", "v"):
            key = f"model.diffusion_model.{path}.1.transformer_blocks.0.attn2.i_to_{kind}.weight"
            ours[f"image_kv.{index}.to_{kind}.weight"] = theirs[key]
    return ours


def _vision_entry(name: str, value: Tensor) -> dict[str, Tensor]:
    prefix = "style_encoder.vision."
    direct = {"conv1.weight": "embeddings.patch_embedding.weight", "class_embedding": "embeddings.class_embedding",
              "positional_embedding": "embeddings.position_embedding.weight"}
    if name in direct:
        return {prefix + direct[name]: value}
    if name.startswith("ln_pre."):
        return {prefix + name.replace("ln_pre.", "pre_layrnorm."): value}
    match = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)", name.replace("in_proj_", "in_proj."))
    if match is None:
        raise CheckpointError(f"Unknown tensor in DEADiff's CLIP tower: {_VISION}{name}.")
    layer, part, kind = match.groups()
    target = f"{prefix}encoder.layers.{layer}."
    if part == "attn.in_proj":  # nn.MultiheadAttention's packed [q; k; v] projection
        query, key, value = value.chunk(3, dim=0)
        return {f"{target}self_attn.{p}_proj.{kind}": v for p, v in (("q", query), ("k", key), ("v", value))}
    if part in _VISION_LAYER_NAMES:
        return {f"{target}{_VISION_LAYER_NAMES[part]}.{kind}": value}
    raise CheckpointError(f"Unknown tensor in DEADiff's CLIP tower: {_VISION}{name}.")


def _count(theirs: Mapping[str, Tensor], prefix: str, suffix: str) -> int:
    return sum(1 for key in theirs if key.startswith(prefix) and key.endswith(suffix))


def _some(items: list[str]) -> str:
    if not items:
        return "none"
    shown = ", ".join(f"`{item}`" for item in items[:_LISTED_KEYS])
    return shown + (", ..." if len(items) > _LISTED_KEYS else "")

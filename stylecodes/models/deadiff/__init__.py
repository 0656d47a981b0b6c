"""DEADiff (Qi et al., CVPR 2024) ported onto diffusers and transformers: a reference image's style, without its
objects, through 16 Q-Former tokens in the UNet's style layers. See docs/engine.md ("DEADiff") for its licence.

- `style_encoder`: CLIP ViT-L + style BLIP-2 Q-Former + projection, image -> (16, 768) style tokens;
- `attention`: the joint text-image cross-attention as diffusers attention processors;
- `model`: both in one `DEADiffModel`, loaded from one converted file;
- `convert` / `checkpoint_reader`: the released Lightning checkpoint -> that file, without running its pickle;
- `settings`: the operator's opt-in and the file's path (torch-free, so the bot can read it).

This file imports nothing, so that `settings` stays torch-free; import the modules themselves.
"""

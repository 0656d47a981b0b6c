"""Training: StyleForge personal styles (LoRA fine-tuning with dual binding) from a user's own images.

`imageset` (torch-free) checks the images; `forge` trains; `checkpoint` makes a run resumable on another machine.
"""

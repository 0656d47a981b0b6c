"""LoRA adapters: the forged style's file format (`manifest` is torch-free), and loading adapters into a UNet."""

"""The Ascend ModelZoo recipes' scripts: their flags translated to overrides, and the console
lines and figures their shell wrappers read back."""

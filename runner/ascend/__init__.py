"""The Ascend ModelZoo recipes' scripts: their flags translated to overrides (scripts), the console
lines and figures their shell wrappers read back (modelzoo), and what a run leaves for them
(figures). Above the fit and the record, which import nothing of it."""

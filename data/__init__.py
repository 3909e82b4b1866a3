"""Datasets and preprocessing. Plain functions of plain arguments: nothing here knows Hydra.

Every source returns (train, val, class_names) where train and val are unbatched
`tf.data.Dataset`s of (image float32 [H, W, 3] in [0, 255], label int32).
"""

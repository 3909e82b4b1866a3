"""Model families, one file each. Plain functions of plain arguments: nothing here knows Hydra.

Every model takes float32 pixels in [0, 255], shape (H, W, 3), and rescales inside, so a
checkpoint or an export can be fed raw images.
"""

"""Shared by the after-training tools (evaluate, predict, export): their key=value command lines
and the finished run they load."""

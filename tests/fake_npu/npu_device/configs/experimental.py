"""`npu_device.configs.experimental`: empty in the adapter too."""

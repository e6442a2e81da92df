"""`wsi extract`: tile stores -> feature bags, with a registry of tile encoders (RetCCL, any timm model)."""

"""Models: timm ViT encoders, MAE, DINO and task heads."""

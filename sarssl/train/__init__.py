"""Training: one engine for every stage, pretraining and fine-tuning entry points."""

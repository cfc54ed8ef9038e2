"""The training run: the recipe (`run`), its LightningModule, summary, resume and sweeps."""

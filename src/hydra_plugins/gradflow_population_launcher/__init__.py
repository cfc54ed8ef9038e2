"""gradflow's population launcher, where Hydra looks for launchers (`hydra_plugins`)."""

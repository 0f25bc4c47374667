"""Pure helpers the pack shares: atomic writes, video files, the loss-curve plot, the path rules for graph inputs."""

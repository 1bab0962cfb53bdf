"""The three networks of Wan2.2-I2V: DiT expert, Wan2.1 VAE, umT5 text encoder."""

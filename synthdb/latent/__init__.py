"""Latent-space tools: projection (GAN inversion), covariate directions, latent editing."""

"""Geometry shared by the encoder and decoder."""

#: Pixels per latent sample along each axis (y is at 1/16 resolution, z at 1/64).
LATENT_STRIDE = 16
#: Images are padded (edge replication) to a multiple of this before coding.
PAD_MULTIPLE = 64

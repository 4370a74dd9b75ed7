"""Programs that run inside the jail (standard library only): see emcc_launch."""

"""noisyseg."""

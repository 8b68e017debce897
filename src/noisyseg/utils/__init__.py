"""Small shared helpers (atomic file output, JSON reading with clear errors)."""

"""Software-defined assets, one module per source or domain."""

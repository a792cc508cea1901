"""Landing layer: what the three sources delivered, inventoried and validated, never altered."""

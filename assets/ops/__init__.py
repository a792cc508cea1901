"""Operations: forecast deviations and the cases they open."""

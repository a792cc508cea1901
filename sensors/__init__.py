"""Sensors: react to what lands in the lake."""

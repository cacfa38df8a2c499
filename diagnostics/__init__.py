"""Diagnoses of committed results: short, seeded runs that say why a number is what it is."""

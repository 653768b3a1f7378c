"""Generators that make new data with a method of a published dataset (`earthvl generate ...`)."""

"""GAIA's automated annotation framework as a tool (`earthvl annotate gaia`): one module per step."""

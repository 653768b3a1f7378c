"""earthvl: remote-sensing vision-language datasets, training and evaluation on the Hugging Face stack."""

__version__ = "0.1.0"

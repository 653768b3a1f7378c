"""earthvl.cards"""

"""earthvl.eval"""

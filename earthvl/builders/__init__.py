"""earthvl.builders"""

"""earthvl.train"""

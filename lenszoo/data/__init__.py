"""Lensing simulations, dataset storage and streaming."""

"""Analyses of trained models: ``codebook`` (the paper's Figure 3: code usage, P(phone | code), purity, PNMI)."""

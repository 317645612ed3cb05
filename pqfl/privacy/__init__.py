"""Privacy: the (ε, δ) a differentially private federation spends (``accounting``) and what
a trained detector reveals about the rows it was trained on (``membership``)."""

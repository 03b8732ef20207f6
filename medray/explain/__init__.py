"""Class activation maps for whole test sets, as a Ray Data batch job."""

"""Models: BEATs teachers, TF-SepNet and CP-Mobile students, and the Quick tour's tiny CNN."""

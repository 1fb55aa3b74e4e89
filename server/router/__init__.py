"""`modelyard router`: one front door for every Model of a cluster (DESIGN.md, "The cluster front door")."""

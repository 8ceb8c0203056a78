"""OFG: on-the-fly guidance training for medical image registration."""

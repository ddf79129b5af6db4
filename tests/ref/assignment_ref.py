"""Reference for fm's linear sum assignment: the optimal assignment cost of each cost matrix in an .npz (arrays
c0, c1, ...), from scipy.optimize.linear_sum_assignment, one number per line with full precision."""
import sys

import numpy as np
from scipy.optimize import linear_sum_assignment

with np.load(sys.argv[1]) as z:
    for i in range(len(z.files)):
        c = z[f"c{i}"]
        r, col = linear_sum_assignment(c)
        print(repr(float(c[r, col].sum())))

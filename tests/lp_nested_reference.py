"""The Lp-nested function computed by plain recursion in numpy, independently of the library's tree code."""

import numpy as np


def np_lp_nested(tree, exponents, z):
    """f(z) by direct recursion over the list notation (exponents consumed in pre-order), in numpy."""
    exponents = list(exponents)
    z = np.asarray(z, dtype=np.float64)
    state = {"node": 0, "leaf": 0}

    def visit(node):
        p = exponents[state["node"]]
        state["node"] += 1
        total = 0.0
        for child in node:
            if isinstance(child, list):
                total = total + visit(child) ** p
            else:
                for _ in range(child):
                    total = total + np.abs(z[..., state["leaf"]]) ** p
                    state["leaf"] += 1
        return total ** (1.0 / p)

    value = visit(tree)
    assert state["leaf"] == z.shape[-1] and state["node"] == len(exponents)
    return value

"""Tree arithmetic: the pytree operations gradxform's transformations are written with.

Every function treats ``None`` as JAX does, as an empty subtree; functions that combine several
trees check that their structures agree and raise an error showing both when they do not.
"""

from gradxform._tree import (
    check_inexact_leaves as check_inexact_leaves,
)
from gradxform._tree import (
    check_same_structure as check_same_structure,
)
from gradxform._tree import (
    compute_dtype as compute_dtype,
)
from gradxform._tree import (
    default_float_dtype as default_float_dtype,
)
from gradxform._tree import (
    real_dtype as real_dtype,
)
from gradxform._tree import (
    tree_add as tree_add,
)
from gradxform._tree import (
    tree_add_scaled as tree_add_scaled,
)
from gradxform._tree import (
    tree_bias_correction as tree_bias_correction,
)
from gradxform._tree import (
    tree_cast as tree_cast,
)
from gradxform._tree import (
    tree_global_norm as tree_global_norm,
)
from gradxform._tree import (
    tree_map_multi as tree_map_multi,
)
from gradxform._tree import (
    tree_moment_update as tree_moment_update,
)
from gradxform._tree import (
    tree_scale as tree_scale,
)
from gradxform._tree import (
    tree_squared_norm as tree_squared_norm,
)
from gradxform._tree import (
    tree_subtract as tree_subtract,
)
from gradxform._tree import (
    tree_vdot as tree_vdot,
)
from gradxform._tree import (
    tree_where as tree_where,
)
from gradxform._tree import (
    tree_zeros_like as tree_zeros_like,
)

__all__ = [
    "check_inexact_leaves",
    "check_same_structure",
    "compute_dtype",
    "default_float_dtype",
    "real_dtype",
    "tree_add",
    "tree_add_scaled",
    "tree_bias_correction",
    "tree_cast",
    "tree_global_norm",
    "tree_map_multi",
    "tree_moment_update",
    "tree_scale",
    "tree_squared_norm",
    "tree_subtract",
    "tree_vdot",
    "tree_where",
    "tree_zeros_like",
]

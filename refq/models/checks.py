"""Validation of a model's parameter dict against the names and shapes its config needs."""
from __future__ import annotations


def check_param_shapes(params: dict, want: dict[str, tuple], what: str, optional: tuple = ()) -> None:
    """ValueError naming the missing or unexpected keys, or the first mis-shaped one (`what` names the model);
    keys in `optional` may be present without being wanted."""
    missing, extra = sorted(set(want) - set(params)), sorted(set(params) - set(want) - set(optional))
    if missing or extra:
        raise ValueError(f"{what} checkpoint keys do not match the config: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    for k, shape in want.items():
        if tuple(params[k].shape) != shape:
            raise ValueError(f"{what} checkpoint: {k} has shape {tuple(params[k].shape)}, config needs {shape}")

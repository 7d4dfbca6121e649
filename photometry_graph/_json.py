"""One converter from the package's results to strict JSON (reports, ``to_dict`` methods)."""

import json

import numpy as np

from .core.tiles import BBox

__all__ = ["jsonable", "layered", "JSON_LEVELS"]


def _json_default(obj):
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, BBox):
        return [obj.y0, obj.y1, obj.x0, obj.x1]
    return obj.to_dict() if hasattr(obj, "to_dict") else str(obj)


def _null(constant):
    """JSON null for the ``NaN``, ``Infinity`` and ``-Infinity`` that Python's encoder writes."""
    return None


def jsonable(payload):
    """A copy of ``payload`` that strict JSON can hold.

    numpy scalars and arrays become numbers and lists, a :class:`~photometry_graph.core.tiles.BBox`
    ``[y0, y1, x0, x1]``, an object with ``to_dict()`` that dict, anything else its ``str``;
    tuples become lists and NaN/inf become None (JSON null).

    Examples
    --------
    >>> jsonable({"g": np.float32(1.5), "bad": float("nan"), "box": BBox(0, 2, 1, 3)})
    {'g': 1.5, 'bad': None, 'box': [0, 2, 1, 3]}
    """
    # one pass of the C encoder and one of the decoder: the decoder turns the non-finite
    # numbers into None (a walk of the result in Python took longer than both passes)
    return json.loads(json.dumps(payload, default=_json_default), parse_constant=_null)


#: Levels of dicts whose keys :func:`layered` puts on their own lines.
JSON_LEVELS = 3


def layered(value, indent=2, level=0):
    """Strict JSON text of ``value`` for a reader, written by the C encoder.

    Dicts down to :data:`JSON_LEVELS` levels one key a line, lists of dicts or lists
    there one item a line, the rest on one line (the report of a 4,993-frame session:
    43 MB in 1.2 s, where ``json.dumps(indent=2)``, in Python, took 80 MB and 3.6 s).

    Examples
    --------
    >>> print(layered({"a": [{"b": 1}, {"b": 2}], "c": {1: [1, 2]}}, 2))
    {
      "a": [
        {"b": 1},
        {"b": 2}
      ],
      "c": {
        "1": [1, 2]
      }
    }
    """
    pad, inner = " " * (indent * level), " " * (indent * (level + 1))
    if level < JSON_LEVELS and isinstance(value, dict) and value:
        items = (f"{inner}{json.dumps(_key(k))}: {layered(v, indent, level + 1)}"
                 for k, v in value.items())
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if level < JSON_LEVELS and isinstance(value, list) and value \
            and isinstance(value[0], (dict, list)):
        items = (inner + json.dumps(v, allow_nan=False) for v in value)
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value, allow_nan=False)


def _key(key):
    """A dict key as JSON writes it: a string (``1`` -> ``"1"``, ``True`` -> ``"true"``)."""
    return key if isinstance(key, str) else next(iter(json.loads(json.dumps({key: 0}))))

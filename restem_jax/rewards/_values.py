"""The plain-value format in which sandboxed code returns values to the judge.

A small binary format for plain values, parsed without `json` (whose import of `re` costs more
than the rest of the harness's start-up) and without `marshal` or `pickle` (unsafe on data the
candidate wrote). Decoding builds exact built-in types only and bounds its own work: depth,
lengths, and sets/dicts whose keys' hashes are equal or clustered (see `_check_hashes`).

`sandbox.py` runs this file's source followed by `_harness.py`'s inside the sandbox; outside,
`code.py` and `_harness.py` import it. Stdlib only, Python >= 3.8.
"""

# One tag byte, then:
#   N T F                 None, True, False
#   i<decimal>;  f<repr>;  int, float (repr round-trips, incl. inf and nan)
#   s<n>:<n bytes utf-8>   b<n>:<n bytes>   str, bytes
#   c<float><float>        complex (two encoded floats)
#   l t S Z <n>:<items>    list, tuple, set, frozenset of n encoded items
#   d<n>:<2n items>        dict (key, value, key, value, ...)

_MAX_DEPTH = 200
_MAX_EQUAL_HASHES = 16
# Sets and dicts up to this size may have clustered hashes: their cost stays in milliseconds.
_MAX_CLUSTER_FREE = 1024
_SEQUENCES = {list: b"l", tuple: b"t", set: b"S", frozenset: b"Z"}
_SEQUENCE_TYPES = {b"l": list, b"t": tuple, b"S": set, b"Z": frozenset}


def _encode(x, out, depth):
  t = type(x)
  if x is None:
    out.append(b"N")
  elif t is bool:
    out.append(b"T" if x else b"F")
  elif t is int:
    out.append(b"i%d;" % x)  # ValueError past Python's 4300-digit limit: not sendable
  elif t is float:
    out.append(b"f" + repr(x).encode() + b";")
  elif t is str or t is bytes:
    data = x.encode("utf-8", "surrogatepass") if t is str else x
    out.append(b"%s%d:" % (b"s" if t is str else b"b", len(data)))
    out.append(data)
  elif t is complex:
    out.append(b"c")
    _encode(x.real, out, depth)
    _encode(x.imag, out, depth)
  elif depth > _MAX_DEPTH:
    raise ValueError("value nested too deeply")
  elif t in _SEQUENCES:
    out.append(b"%s%d:" % (_SEQUENCES[t], len(x)))
    for v in x:
      _encode(v, out, depth + 1)
  elif t is dict:
    out.append(b"d%d:" % len(x))
    for k, v in x.items():
      _encode(k, out, depth + 1)
      _encode(v, out, depth + 1)
  else:
    raise TypeError("cannot send a value of type %s" % t.__name__)


def encode_value(x):
  """Bytes for a plain value (exact built-in types only); raises TypeError/ValueError else."""
  out = []
  _encode(x, out, 0)
  return b"".join(out)


def _check_hashes(keys):
  """Refuses keys whose hashes would make building a set or dict of them slow, in C, where no
  deadline of the decoding process can interrupt it:
  - too many equal hashes: n keys with one hash take O(n^2) comparisons (e.g. 10**5 ints
    equal modulo 2**61 - 1);
  - in large sets, too many hashes equal in their low bits (e.g. k << 40): all start at one
    slot of the table and share most of their probe sequence, ~10x the cost per key (paid by
    S and again by the judge). Spread hashes put a few keys per slot of a table of >= 2n.
  Ints, floats and tuples of them hash the same in every process, so a program can aim at
  this; the string hash is secret per process. Each check costs O(n)."""
  n = len(keys)
  if n <= _MAX_EQUAL_HASHES:
    return
  hashes = [hash(key) for key in keys]  # TypeError for unhashable keys: malformed
  if n > _MAX_CLUSTER_FREE:
    mask = (1 << (n.bit_length() + 1)) - 1
    slots = {}
    for h in hashes:
      slot = h & mask  # as CPython's tables pick a key's first slot
      count = slots.get(slot, 0) + 1
      if count > _MAX_EQUAL_HASHES:
        raise ValueError("too many set elements or dict keys with equal hashes in their low bits")
      slots[slot] = count
  counts = {}  # keyed by hash: built quickly now that the hashes are known to spread
  for h in hashes:
    count = counts.get(h, 0) + 1
    if count > _MAX_EQUAL_HASHES:
      raise ValueError("too many set elements or dict keys with equal hashes")
    counts[h] = count


def _field(data, pos, end_byte):
  end = data.index(end_byte, pos, pos + 5000)  # ValueError if absent: malformed
  return data[pos:end], end + 1


def _decode(data, pos, depth):
  tag = data[pos:pos + 1]
  pos += 1
  if tag == b"N":
    return None, pos
  if tag == b"T":
    return True, pos
  if tag == b"F":
    return False, pos
  if tag == b"i":
    text, pos = _field(data, pos, b";")
    if not text.lstrip(b"-").isdigit():
      raise ValueError("malformed int")
    return int(text), pos
  if tag == b"f":
    text, pos = _field(data, pos, b";")
    return float(text.decode("ascii")), pos
  if tag == b"c":
    real, pos = _decode(data, pos, depth)
    imag, pos = _decode(data, pos, depth)
    if type(real) is not float or type(imag) is not float:
      raise ValueError("malformed complex")
    return complex(real, imag), pos
  if tag in (b"s", b"b", b"l", b"t", b"S", b"Z", b"d"):
    text, pos = _field(data, pos, b":")
    if not text.isdigit():
      raise ValueError("malformed length")
    n = int(text)
    if tag in (b"s", b"b"):
      if pos + n > len(data):
        raise ValueError("truncated value")
      raw = data[pos:pos + n]
      return (raw.decode("utf-8", "surrogatepass") if tag == b"s" else bytes(raw)), pos + n
    if depth > _MAX_DEPTH:
      raise ValueError("value nested too deeply")
    count = 2 * n if tag == b"d" else n
    if count > len(data) - pos:  # every item takes at least one byte
      raise ValueError("truncated value")
    items = []
    for _ in range(count):
      item, pos = _decode(data, pos, depth + 1)
      items.append(item)
    try:
      if tag == b"d":
        _check_hashes(items[0::2])
        return dict(zip(items[0::2], items[1::2])), pos
      if tag in (b"S", b"Z"):
        _check_hashes(items)
      return _SEQUENCE_TYPES[tag](items), pos
    except TypeError as e:  # an unhashable key or set element
      raise ValueError("malformed value: %s" % e)
  raise ValueError("malformed value")


def decode_value(data):
  """The plain value in bytes from `encode_value`, built from exact built-in types only.

  Raises:
    ValueError: for anything that is not exactly one well-formed value.
  """
  if type(data) is not bytes:
    raise ValueError("not bytes")
  try:
    value, pos = _decode(data, 0, 0)
  except (IndexError, UnicodeDecodeError, OverflowError, RecursionError) as e:
    raise ValueError("malformed value: %s" % type(e).__name__)
  if pos != len(data):
    raise ValueError("trailing bytes after the value")
  return value

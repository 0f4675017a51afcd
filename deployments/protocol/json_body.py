"""Request bodies in, response bodies out: bounded JSON decoding and fast JSON encoding.

`parse_json` turns the bytes of a KServe v1 or OIP v2 body into Python values, or raises
`BadRequest` naming the field and the limit. It never raises anything else for any input
bytes: deep nesting, huge number literals, NaN/Infinity, invalid UTF-8, lone surrogate
escapes and oversized strings or objects all become a 400, not a RecursionError or
ValueError that would surface as a 500.

How: orjson (C) decodes. It refuses what stdlib `json` lets through (NaN, Infinity, numbers
that overflow a double such as `1e999`, lone surrogate escapes, invalid UTF-8) and has its
own nesting limit of 1024, so it cannot recurse the interpreter out of stack. Our tighter
limits (`JsonLimits`) are checked on the bytes, in passes that run at C speed and each take
time linear in the body: `bytes.translate` down to a skeleton of brackets and key colons
(strings removed), numpy over that skeleton for depth and keys per object, `bytes.find` for
an overlong number. Each is skipped where a free bound already clears it: a skeleton of 2n
bytes cannot nest deeper than n. Only a body that breaks a limit, or is not JSON at all,
pays for the slow part: a pure-Python tokenizer that walks to the offending token to name
its path (`instances[3].amount`), within a budget past which the field is named "body".

Decoding follows orjson, which differs from stdlib `json` on valid input in one way:
integer literals outside the 64-bit range (below -2**63, above 2**64 - 1) decode as the
nearest float, as a JavaScript client would read them; `max_number_chars` bounds how long
such a literal can be. A UTF-8 byte order mark is skipped (RFC 8259 lets a parser ignore
it, and stdlib `json.loads` did); UTF-16 and UTF-32 bodies are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from deployments.errors import BadRequest

EMPTY_MESSAGE = "request body is empty; expected a JSON object"

# orjson's own nesting limit: it refuses the 1025th nested container.
ORJSON_MAX_DEPTH = 1024


@dataclass(frozen=True)
class JsonLimits:
    """Bounds on a request body's JSON, each checked before or right after decoding.

    max_depth: nested arrays/objects; the outermost container is depth 1. An OIP v2 body
        with a 4-d `data` tensor nests 7 deep.
    max_number_chars: characters in one number literal as sent (sign, digits, point,
        exponent). A double needs at most 24 (`-2.2250738585072014e-308`).
    max_string_bytes: bytes of one string literal as sent, between the quotes, escapes
        counted as written; the decoded string is never longer in UTF-8.
    max_keys_per_object: members of one object.
    max_items_total: array elements plus object members, over the whole document; bounds
        the Python objects a body can turn into, whatever its size limit.
    """

    max_depth: int = 32
    max_number_chars: int = 40
    max_string_bytes: int = 1 << 20
    max_keys_per_object: int = 1024
    max_items_total: int = 1_000_000

    def __post_init__(self) -> None:
        for name in (
            "max_depth",
            "max_number_chars",
            "max_string_bytes",
            "max_keys_per_object",
            "max_items_total",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"JsonLimits.{name} must be at least 1")
        if self.max_depth > ORJSON_MAX_DEPTH:
            raise ValueError(f"JsonLimits.max_depth cannot exceed orjson's {ORJSON_MAX_DEPTH}")


DEFAULT_LIMITS = JsonLimits()


def parse_json(body: bytes | bytearray | memoryview, limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """Decode a request body, or raise `BadRequest` with `details` naming field and reason.

    Each detail is `{"field": <path such as "instances[3].amount", or "body">, "reason":
    <which limit, what value>}`.
    """
    if isinstance(body, memoryview):
        body = body.tobytes()
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    if not body or body.isspace():
        raise BadRequest(EMPTY_MESSAGE, [{"field": "body", "reason": "empty"}])
    _check_encoding_signature(body)

    # Before decoding, what bounds the memory the decoded value can take: elements plus
    # members are at most the commas plus the opening brackets, each a byte of the body.
    cap = limits.max_items_total
    if len(body) > cap and _commas_and_openings(body) > cap:
        _check_items(body, limits)

    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(body, exc, limits) from None

    # After decoding, on a body now known to be JSON (so the skeleton is exact), each check
    # runs only when a cheap bound does not already clear it: depth is at most half the
    # skeleton's length, keys at most all of it.
    skeleton = _skeleton(body)
    if len(skeleton) > min(2 * limits.max_depth + 1, limits.max_keys_per_object):
        _check_depth_and_keys(body, skeleton, limits)
    if len(body) - 2 > limits.max_string_bytes:
        _check_strings(body, limits)
    if len(body) > limits.max_number_chars:
        _check_numbers(body, limits)
    return value


def json_response_bytes(obj: Any) -> bytes:
    """Encode a response body as compact UTF-8 JSON bytes, with orjson.

    numpy arrays (any shape, C-contiguous or not) and numpy scalars encode as JSON arrays
    and numbers; float32 values are written with the shortest float32 repr (`0.1`, not
    `0.10000000149011612`). Dict keys must be `str`. Non-finite floats (NaN, +-Infinity)
    are written as `null`, which is valid JSON where stdlib `json` would write the non-JSON
    tokens `NaN`/`Infinity`; callers that must refuse them check before encoding. Raises
    `TypeError` (orjson.JSONEncodeError) for values it cannot encode: other types,
    integers beyond 64 bits, strings with lone surrogates.
    """
    return orjson.dumps(obj, default=_encode_default, option=orjson.OPT_SERIALIZE_NUMPY)


def _encode_default(obj: Any) -> Any:
    # orjson calls this for what it does not encode natively: non-contiguous or
    # unsupported-dtype arrays, and numpy scalars of dtypes it does not know.
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


# --- the bytes checks -------------------------------------------------------------------
#
# Each takes time linear in the body: bytes methods, numpy over arrays of bytes, and the
# regex `_STRING`, searched for only in a body orjson accepted (where each match ends at the
# next unescaped quote) and otherwise only matched once, at one place.

# One string literal, escapes included; on valid JSON, scanning left to right finds exactly
# the string literals (outside strings there are no quotes).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def _all_but(keep: bytes) -> bytes:
    """The `delete` argument of bytes.translate that keeps only the bytes in `keep`."""
    return bytes(b for b in range(256) if b not in keep)


# The skeleton's bytes.
_NOT_SKELETON = _all_but(b'"[]{}:')
# Where a quote is escaped, each byte that can follow a backslash in an escape is kept too,
# as 'x' (quotes and backslashes as themselves), so that `\n"` cannot read as `\"`.
_ESCAPED = b"/bfnrtu"
_NOT_SKELETON_OR_ESCAPED = _all_but(b'"[]{}:\\' + _ESCAPED)
_ESCAPED_AS_X = bytes(0x78 if b in _ESCAPED else b for b in range(256))
_NOT_COMMA_OR_OPENING = _all_but(b",[{")
# For counting items: structure and quotes kept, the first byte of a number or literal
# made '0', the rest deleted.
_ITEM_BYTES = bytes(0x30 if b in b"-0123456789tfn" else b for b in range(256))
_NOT_ITEM_BYTES = _all_but(b'"[]{},-0123456789tfn')
# Bytes that can appear in a number literal -> '0', quotes kept, the rest -> ' '.
_NUMBER_BYTES = bytes(
    0x30 if b in b"-+0123456789.eE" else b if b == 0x22 else 0x20 for b in range(256)
)
# +1 for an opening bracket, -1 for a closing one: their running sum is the depth.
_DEPTH_STEP = np.zeros(256, np.int8)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1


def _unescaped(body: bytes | bytearray) -> bytes | bytearray:
    """The body with escaped backslashes and escaped quotes dropped, where it has any.

    Inside strings backslashes pair left to right, which is how `replace` scans: after
    dropping the pairs, a backslash before a quote escapes it. Every quote left is then a
    string's own opening or closing one.
    """
    if b"\\" not in body:
        return body
    return body.replace(b"\\\\", b"").replace(b'\\"', b"")


def _in_strings(chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of (the opening quotes, every byte of a string literal, quotes included).

    `chars` has its escapes undone, so quotes alternate: opening, closing, opening...
    """
    quote = chars == 0x22
    after_opening = np.logical_xor.accumulate(quote)
    return quote & after_opening, after_opening | quote


def _check_encoding_signature(body: bytes | bytearray) -> None:
    head = bytes(body[:4])
    for bom, name in (
        (b"\x00\x00\xfe\xff", "UTF-32 BE"),
        (b"\xff\xfe\x00\x00", "UTF-32 LE"),
        (b"\xfe\xff", "UTF-16 BE"),
        (b"\xff\xfe", "UTF-16 LE"),
    ):
        if head.startswith(bom):
            reason = f"starts with a {name} byte order mark; JSON bodies must be UTF-8"
            raise BadRequest(f"request body is not UTF-8: {reason}", _body(reason))
    # A JSON text starts with ASCII; NUL bytes among its first four mean UTF-16 or UTF-32.
    if b"\x00" in head:
        reason = "NUL bytes at the start look like UTF-16 or UTF-32; JSON bodies must be UTF-8"
        raise BadRequest(f"request body is not UTF-8: {reason}", _body(reason))


def _commas_and_openings(body: bytes | bytearray) -> int:
    """Commas and opening brackets, those inside strings included: an upper bound."""
    return len(body.translate(None, _NOT_COMMA_OR_OPENING))


def _check_items(body: bytes | bytearray, limits: JsonLimits) -> None:
    """Array elements plus object members: the commas plus the non-empty containers.

    Runs before decoding, on a body that may not be JSON; then it counts what looks like
    structure outside what look like strings, which is still a fair reason to refuse.
    """
    chars = np.frombuffer(_unescaped(body).translate(_ITEM_BYTES, _NOT_ITEM_BYTES), np.uint8)
    opening, in_string = _in_strings(chars)
    # Each string becomes one '0', like any other value: `[""]` is not empty.
    flat = np.where(opening, np.uint8(0x30), chars)[~in_string | opening].tobytes()
    count = (
        flat.count(b",")
        + flat.count(b"[")
        + flat.count(b"{")
        - flat.count(b"[]")
        - flat.count(b"{}")
    )
    if count > limits.max_items_total:
        reason = (
            f"{count} array elements and object members exceed the limit of "
            f"{limits.max_items_total}"
        )
        raise BadRequest(f"request body exceeds a JSON limit: {reason}", _body(reason))


def _skeleton(body: bytes | bytearray) -> bytes | bytearray:
    """Brackets and key colons, strings removed: `{"a":[1,{"b":"]"}]}` -> `{:[{:}]}`."""
    if b"\\" in body and b'\\"' in body:
        text = body.translate(_ESCAPED_AS_X, _NOT_SKELETON_OR_ESCAPED)
        text = _unescaped(text).translate(None, b"\\x")
    else:
        # No quote is escaped, so each opens or closes a string; other escapes do not matter.
        text = body.translate(None, _NOT_SKELETON)
    # A string with no structural byte inside is now `""`. When every quote is in such a
    # pair (counted left to right, as the strings pair), deleting the quotes is enough.
    quotes = text.count(b'"')
    if not quotes:
        return text
    if 2 * text.count(b'""') == quotes:
        return text.translate(None, b'"')
    chars = np.frombuffer(text, np.uint8)
    return chars[~_in_strings(chars)[1]].tobytes()


def _check_depth_and_keys(
    body: bytes | bytearray, skeleton: bytes | bytearray, limits: JsonLimits
) -> None:
    chars = np.frombuffer(skeleton, np.uint8)
    depth = np.cumsum(_DEPTH_STEP[chars], dtype=np.int32)
    if int(depth.max()) > limits.max_depth:
        _raise_located(body, limits, f"nesting deeper than the limit of {limits.max_depth}")
    colons = np.flatnonzero(chars == 0x3A)
    if len(colons) <= limits.max_keys_per_object:
        return
    # A key's colon belongs to the last object opened at its own depth before it: an
    # object's keys are the colons at its depth from its opening to the next one's there.
    objects = np.flatnonzero(chars == 0x7B)
    colon_depth, object_depth = depth[colons], depth[objects]
    for level in np.flatnonzero(np.bincount(colon_depth) > limits.max_keys_per_object):
        level_colons = colons[colon_depth == level]
        starts = np.searchsorted(level_colons, objects[object_depth == level])
        sizes = np.diff(starts, append=len(level_colons)) if len(starts) else level_colons
        if int(sizes.max()) > limits.max_keys_per_object:
            _raise_located(
                body, limits, f"an object has more than {limits.max_keys_per_object} keys"
            )


def _check_strings(body: bytes | bytearray, limits: JsonLimits) -> None:
    longest = max(map(len, _STRING.findall(body)), default=2) - 2
    if longest > limits.max_string_bytes:
        _raise_located(
            body,
            limits,
            f"a string of {longest} bytes exceeds the limit of {limits.max_string_bytes}",
        )


def _check_numbers(body: bytes | bytearray, limits: JsonLimits) -> None:
    run = b"0" * (limits.max_number_chars + 1)
    if run not in body.translate(_NUMBER_BYTES):
        return
    # Digits, 'e' and '-' inside strings count above; look again with strings blanked.
    chars = np.frombuffer(_unescaped(body).translate(_NUMBER_BYTES), np.uint8)
    if run in np.where(_in_strings(chars)[1], np.uint8(0x20), chars).tobytes():
        _raise_located(
            body,
            limits,
            f"a number literal exceeds the limit of {limits.max_number_chars} characters",
        )


def _body(reason: str) -> list[dict[str, Any]]:
    return [{"field": "body", "reason": reason}]


# --- naming the field: the slow path, only for bodies that are refused --------------------

# Tokens: a string (its closing quote optional, for a truncated body), one structural byte,
# or a run of anything else but whitespace (a number, a literal, or garbage).
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{},:]|[^\s"\[\]{},:]+', re.DOTALL)
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_NON_FINITE = re.compile(rb"-?(?:NaN|Infinity|inf|nan)")
# The walk that names a field costs Python time per token and per escape; past this many
# tokens, or bytes, a refused body is named "body" instead, so that a large bad body costs
# little more than a good one.
_SCAN_TOKENS = 50_000
_SCAN_BYTES = 256 * 1024
_PATH_PARTS_SHOWN = 24


class _Violation(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason


class _OutOfBudget(Exception):
    pass


def _key_text(literal: bytes) -> str:
    try:
        key = orjson.loads(literal)
    except orjson.JSONDecodeError:
        key = bytes(literal).strip(b'"').decode("utf-8", "replace")
    if not isinstance(key, str):
        key = str(key)
    if _PLAIN_KEY.fullmatch(key):
        return "." + key
    if len(key) > 64:
        key = key[:64] + "..."
    return "[" + orjson.dumps(key.encode("utf-8", "replace").decode("utf-8")).decode() + "]"


def _path(stack: list[list[Any]]) -> str:
    """`instances[3].amount`, from frames [is_object, index, key, members, expecting_key]."""
    parts = []
    for is_object, index, key, _members, expecting_key in stack:
        if is_object:
            if key is None or expecting_key:
                break
            parts.append(key)
        else:
            parts.append(f"[{index}]")
    if len(parts) > _PATH_PARTS_SHOWN:
        half = _PATH_PARTS_SHOWN // 2
        parts = [*parts[:half], "...", *parts[-half:]]
    return "".join(parts).lstrip(".") or "body"


def _check_literal(token: bytes, stack: list[list[Any]], limits: JsonLimits) -> None:
    """A value's string or number literal within its limit, else `_Violation`."""
    first = token[0]
    if first == 0x22:  # "
        length = len(token) - 2
        if length > limits.max_string_bytes:
            raise _Violation(
                _path(stack),
                f"string of {length} bytes exceeds the limit of {limits.max_string_bytes}",
            )
    elif first in b"-0123456789" and len(token) > limits.max_number_chars:
        raise _Violation(
            _path(stack),
            f"number literal of {len(token)} characters exceeds the limit of "
            f"{limits.max_number_chars}",
        )


def _scan(body: bytes | bytearray, limits: JsonLimits, stop: int | None = None) -> str:
    """Walk tokens to the first broken limit (raising `_Violation`) or to byte `stop`.

    Returns the path of the value at `stop`. Raises `_OutOfBudget` where that takes more
    than `_SCAN_TOKENS` tokens or `_SCAN_BYTES` bytes. Iterative, so nesting cannot exhaust
    the stack; tolerant of bodies that are not JSON at or after `stop`.
    """
    window = min(len(body), _SCAN_BYTES)
    if stop is not None and stop >= window and window < len(body):
        raise _OutOfBudget
    stack: list[list[Any]] = []
    items = 0
    for count, match in enumerate(_TOKEN.finditer(body, 0, window)):
        if count >= _SCAN_TOKENS:
            raise _OutOfBudget
        token = match.group()
        if match.end() == window < len(body) and token[0] == 0x22:
            # A string the window cuts: its whole literal, for its length.
            whole = _STRING.match(body, match.start())
            token = whole.group() if whole else token
        if stop is not None and match.start() >= stop:
            # The token the decoder stopped at: a limit it breaks, else where it is.
            _check_literal(token, stack, limits)
            break
        first = token[0]
        top = stack[-1] if stack else None
        if first == 0x22 and top is not None and top[0] and top[4]:  # a key
            top[2] = _key_text(token)
            top[3] += 1
            top[4] = False
            if top[3] > limits.max_keys_per_object:
                top[4] = True
                raise _Violation(
                    _path(stack), f"object has more than {limits.max_keys_per_object} keys"
                )
            if len(token) - 2 > limits.max_string_bytes:
                raise _Violation(
                    _path(stack),
                    f"key of {len(token) - 2} bytes exceeds the limit of {limits.max_string_bytes}",
                )
        elif first in b"[{":
            items += top is not None
            if len(stack) >= limits.max_depth:
                raise _Violation(
                    _path(stack), f"nesting deeper than the limit of {limits.max_depth}"
                )
            stack.append([first == 0x7B, 0, None, 0, first == 0x7B])
        elif first in b"]}":
            if stack:
                stack.pop()
        elif first == 0x2C:  # ,
            if top is not None:
                if top[0]:
                    top[4] = True
                else:
                    top[1] += 1
        elif first != 0x3A:  # a string, number or literal value (or garbage)
            items += top is not None
            _check_literal(token, stack, limits)
        if items > limits.max_items_total:
            raise _Violation(
                "body", f"more than {limits.max_items_total} array elements and object members"
            )
        if stop is not None and match.end() > stop:
            break
    else:
        if stop is None and window < len(body):
            raise _OutOfBudget
    return _path(stack)


def _raise_located(body: bytes | bytearray, limits: JsonLimits, found: str) -> None:
    """A bytes check `found` a broken limit: name its field if we can, and raise BadRequest."""
    try:
        _scan(body, limits)
    except _Violation as violation:
        raise _limit_error(violation.field, violation.reason) from None
    except Exception:  # noqa: BLE001 - out of budget, or a bug: the name is lost, not the 400
        pass
    raise _limit_error("body", found)


def _limit_error(field: str, reason: str) -> BadRequest:
    return BadRequest(
        f"request body exceeds a JSON limit: {field}: {reason}",
        [{"field": field, "reason": reason}],
    )


def _decode_error(
    body: bytes | bytearray, exc: orjson.JSONDecodeError, limits: JsonLimits
) -> BadRequest:
    """orjson refused the body: say where and why, preferring one of our limits if broken."""
    try:
        return _describe_decode_error(body, exc, limits)
    except Exception:  # noqa: BLE001 - the body is refused either way; only detail is lost
        reason = f"not valid JSON: {exc.msg}"
        return BadRequest(f"request body is {reason}", _body(reason))


def _field_at(body: bytes | bytearray, limits: JsonLimits, offset: int) -> str:
    try:
        return _scan(body, limits, stop=offset)
    except _OutOfBudget:
        return "body"


def _describe_decode_error(
    body: bytes | bytearray, exc: orjson.JSONDecodeError, limits: JsonLimits
) -> BadRequest:
    msg = str(exc.msg)
    bad_utf8 = None
    if "UTF-8" in msg:
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError as bad:
            bad_utf8 = bad
    if bad_utf8 is not None:
        offset = bad_utf8.start
        reason = f"invalid UTF-8 at byte {offset}: {bad_utf8.reason}"
        try:
            field = _field_at(body, limits, offset)
        except _Violation as violation:
            return _limit_error(violation.field, violation.reason)
        return BadRequest(
            f"request body is not valid UTF-8: {field}: {reason}",
            [{"field": field, "reason": reason}],
        )

    # orjson's position counts characters of the decoded text; ours counts bytes.
    doc = exc.doc if isinstance(exc.doc, str) else ""
    offset = len(doc[: exc.pos].encode("utf-8", "surrogatepass")) if doc else int(exc.pos)
    try:
        field = _field_at(body, limits, offset)
    except _Violation as violation:
        return _limit_error(violation.field, violation.reason)

    if "depth limit" in msg:
        return _limit_error(field, f"nesting deeper than the limit of {limits.max_depth}")
    where = f"line {exc.lineno} column {exc.colno} (byte {offset})"
    if _NON_FINITE.match(body, offset):
        what = "NaN and Infinity are not JSON numbers"
    elif "infinity" in msg:
        literal = _TOKEN.match(body, offset)
        shown = bytes(literal.group()[:40]).decode("ascii", "replace") if literal else "number"
        what = f"number {shown} is out of range for a 64-bit float"
    elif "surrogate" in msg:
        what = f"{msg} (a \\ud800-\\udfff escape must be one of a pair)"
    else:
        what = msg
    reason = f"not valid JSON at {where}: {what}"
    return BadRequest(
        f"request body is not valid JSON: {field}: {what} at {where}",
        [{"field": field, "reason": reason}],
    )

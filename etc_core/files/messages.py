"""How errors quote what a user typed: a short cut, never the whole value (a 100,000-character layout
would otherwise come back in full, and a file's contents never belong in an error)."""

QUOTE_LIMIT = 40


def cut(text: str, limit: int = QUOTE_LIMIT, length: "int | None" = None) -> str:
    """``text`` cut to ``limit`` characters, naming the full ``length`` (default: the text's) when cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) if length is None else length} characters)"


def quote(value, limit: int = QUOTE_LIMIT) -> str:
    """``repr`` of ``value``, cut to about ``limit`` characters with its full length named."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return cut(text, limit, len(value) if isinstance(value, str) else None)

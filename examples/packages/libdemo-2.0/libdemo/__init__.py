"""libdemo 2.0: `render` changed its behaviour, which breaks 1.0's users."""

VERSION = "2.0"


def render(text):
    return text.lower() + "..."

"""libdemo 1.0: `render` shouts."""

VERSION = "1.0"


def render(text):
    return text.upper()

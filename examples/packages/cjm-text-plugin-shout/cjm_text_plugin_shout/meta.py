"""The reference's packaging convention: the host reads this at install time."""

import sys


def get_plugin_metadata():
    return {
        "name": "cjm-text-plugin-shout",
        "version": "1.0.0",
        "description": "Renders text with libdemo 1.0",
        "module": "cjm_text_plugin_shout.plugin",
        "class": "ShoutPlugin",
        "interface": "cjm_text_plugin_system.plugin_interface.TextPlugin",
        "python_path": sys.executable,
    }

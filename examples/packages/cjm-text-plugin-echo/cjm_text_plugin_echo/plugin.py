import os

import libdemo
from cjm_text_plugin_system.plugin_interface import TextPlugin
from cjm_worker import EnvVarSpec


def _marker(name):
    return os.path.join(os.environ.get("CJM_DATA_DIR", "."), name)


class EchoPlugin(TextPlugin):
    # The worker gets ECHO_API_KEY from the host's secret store, never from a file.
    WORKER_ENV = [
        EnvVarSpec(name="ECHO_API_KEY", description="the echo service's API key",
                   secret=True, required=True),
    ]

    name = "cjm-text-plugin-echo"
    version = "0.3.0"

    def initialize(self, config=None):
        # The demo breaks the plugin on purpose: every start dies from now on.
        if os.path.exists(_marker("echo-broken")):
            os._exit(1)
        super().initialize(config)

    def get_config_schema(self):
        return {"type": "object", "properties": {}}

    def execute(self, text="hello", action=None, **kwargs):
        if action == "crash":
            os._exit(1)
        return {
            "text": libdemo.render(text),
            "libdemo": libdemo.VERSION,
            "api_key_set": bool(os.environ.get("ECHO_API_KEY")),
        }
